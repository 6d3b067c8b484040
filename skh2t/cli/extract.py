"""``skh2t extract``: images in, a ``.npz`` file of Head2Toe features out."""

from __future__ import annotations

import argparse

import numpy as np

from skh2t.cli import options
from skh2t.cli.data import (
    DATASET_HELP,
    LabelledImages,
    check_readable,
    list_image_files,
    load_dataset,
)
from skh2t.cli.data import stratified_subsample as draw
from skh2t.cli.errors import UsageError
from skh2t.cli.progress import Progress
from skh2t.output_files import written_whole

DESCRIPTION = """\
Extract Head2Toe features (pooled, L2-normalised activations of every tap) of
a data set or of image files, and save them with numpy.savez_compressed:

  X              float32 (n_images, n_features)
  y              class names of the images (data sets only)
  feature_names  "<tap>__<index>" of every column
  groups         tap index of every column
  tap_names      the taps, in column order
  paths          the image files (files and folders only)"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``skh2t extract``."""
    parser = subparsers.add_parser(
        "extract",
        help="extract features of images to a .npz file",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="image files")
    group = parser.add_argument_group("data (instead of FILEs)")
    group.add_argument("--dataset", metavar="NAME|DIR", help=DATASET_HELP)
    group.add_argument(
        "--split",
        choices=("train", "test"),
        default="train",
        help="Fashion-MNIST split (default: %(default)s)",
    )
    group.add_argument(
        "--n-samples",
        type=options.positive_int,
        metavar="N",
        help="class-balanced random subset of the data set (default: all images)",
    )
    group.add_argument(
        "--random-state", type=options.seed, default=0, metavar="SEED", help="seed of the subset"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="the .npz file to write, at exactly this path (no suffix is added)",
    )
    options.add_backbone_options(parser)
    options.add_quiet_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Extract and save the features."""
    progress = Progress(not args.quiet)
    options.check_output_file(args.output, "--output")
    options.check_backbone(args)
    images, labels, paths = _inputs(args)
    check_readable(images)
    transformer = options.make_transformer(args, args.target_size, verbose=progress.enabled)
    X = transformer.fit_transform(images)
    arrays = {
        "X": X,
        "feature_names": transformer.get_feature_names_out().astype(str),
        "groups": transformer.feature_groups_,
        "tap_names": np.array([tap.name for tap in transformer.taps_]),
    }
    if labels is not None:
        arrays["y"] = labels.astype(str)
    if paths is not None:
        arrays["paths"] = np.array(paths)
    with written_whole(args.output) as part, open(part, "wb") as file:
        np.savez_compressed(file, **arrays)  # to a file object: numpy would add ".npz" to a name
    print(f"wrote {args.output}: {X.shape[0]} images x {X.shape[1]} features")
    return 0


def _inputs(args: argparse.Namespace) -> tuple[object, np.ndarray | None, list[str] | None]:
    """Images, their labels (or None) and their paths (or None)."""
    if args.dataset is not None and args.files:
        raise UsageError("give image FILEs or --dataset, not both")
    if args.dataset is None:
        files = list_image_files(args.files, None)
        return files, None, files
    data: LabelledImages = load_dataset(args.dataset, args.split)
    if args.n_samples is not None:
        data = data.take(draw(data, args.n_samples, args.random_state, "--n-samples"))
    paths = data.images if isinstance(data.images, list) else None
    return data.images, data.labels, paths
