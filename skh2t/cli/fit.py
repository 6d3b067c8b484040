"""``skh2t fit``: fit a Head2Toe pipeline on a data set and save it with joblib."""

from __future__ import annotations

import argparse
from typing import Any

import joblib
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from skh2t import GroupLassoClassifier, Head2ToeClassifier
from skh2t.cli import options
from skh2t.cli.data import (
    DATASET_HELP,
    LabelledImages,
    check_classes,
    check_readable,
    load_dataset,
)
from skh2t.cli.data import stratified_subsample as draw
from skh2t.cli.many_images import (
    ALL,
    Selection,
    add_many_images_options,
    check_many_images,
    disk_space_errors,
    many_images_params,
    n_train_value,
)
from skh2t.cli.progress import Progress
from skh2t.cli.warned import hidden_warnings
from skh2t.output_files import written_whole

DEFAULT_N_TRAIN = 1000
# What `skh2t run`'s cross-validation chose on its default Fashion-MNIST / Lite0 protocol.
DEFAULT_ALPHA = 0.03
DEFAULT_KEEP = 0.2
# Head2ToeClassifier, which --selection-samples and --feature-store go through, always
# cross-validates its grid: here a single point, on the fewest folds it takes.
SELECTION_FOLDS = 2

DESCRIPTION = """\
Fit Pipeline([IntermediateFeatureTransformer, GroupLassoClassifier]) on a data
set (features are extracted once) and save it with joblib. The classifier
predicts class names. `skh2t run` chooses --target-size, --alpha-fraction and
--keep-fraction by cross-validation; pass its choices here (the defaults are
its choices on Fashion-MNIST with Lite0 at 64 px).

For many images (--n-train all): --selection-samples N selects the features
on a stratified subsample of N images and refits the plain head on the kept
features of all of them; --feature-store DIR keeps the features on disk
instead of in memory. With either, the fit goes through Head2ToeClassifier
with this one point as its grid (its 2-fold cross-validation of that point
only costs time) and saves its best_estimator_, the same pipeline."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``skh2t fit``."""
    parser = subparsers.add_parser(
        "fit",
        help="fit a Head2Toe pipeline and save it with joblib",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        default=options.FASHION_MNIST,
        metavar="NAME|DIR",
        help=f"{DATASET_HELP} (default: %(default)s)",
    )
    group.add_argument(
        "--n-train",
        type=n_train_value,
        metavar="N|all",
        help=f"class-balanced training images, or 'all' (every image) (default: "
        f"{DEFAULT_N_TRAIN}, or all if fewer)",
    )
    group.add_argument(
        "--random-state", type=options.seed, default=0, metavar="SEED", help="seed of the draw"
    )
    group = parser.add_argument_group("Head2Toe")
    group.add_argument(
        "--alpha-fraction",
        type=options.fraction,
        metavar="A",
        default=DEFAULT_ALPHA,
        help="group-lasso strength as a fraction of alpha_max (default: %(default)s)",
    )
    group.add_argument(
        "--keep-fraction",
        type=options.fraction,
        metavar="F",
        default=DEFAULT_KEEP,
        help="fraction of features kept (default: %(default)s)",
    )
    options.add_refit_option(group)
    group.add_argument(
        "--max-iter",
        type=options.positive_int,
        default=5000,
        metavar="N",
        help="group-lasso solver iterations (default: %(default)s)",
    )
    parser.add_argument(
        "-o", "--output", default="model.joblib", metavar="FILE", help="(default: %(default)s)"
    )
    options.add_backbone_options(parser)
    add_many_images_options(parser)
    options.add_quiet_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Fit and save the pipeline."""
    progress = Progress(not args.quiet)
    options.check_output_file(args.output, "--output")
    options.check_backbone(args)
    data = _training_images(args)
    selection = check_many_images(args, data.target, SELECTION_FOLDS)
    check_readable(data.images)
    if selection.rows is None and args.feature_store is None:
        pipeline, converged = _fit_in_memory(args, data, progress)
    else:
        pipeline, converged = _fit_head2toe(args, data, progress)
    if not converged:
        progress.message("note: the solver stopped at --max-iter; consider raising it")
    with written_whole(args.output) as part:
        joblib.dump(pipeline, part)
    clf = pipeline["head2toe"]
    kept, n_features = int(clf.get_support().sum()), clf.n_features_in_
    print(f"wrote {args.output}: {_images(data, selection)}, {kept} of {n_features} features kept")
    return 0


def _training_images(args: argparse.Namespace) -> LabelledImages:
    data = load_dataset(args.dataset, "train")
    check_classes(data, "--dataset")
    if args.n_train == ALL or (args.n_train is None and len(data) <= DEFAULT_N_TRAIN):
        return data  # all the images, as the help says, balanced or not
    n_train = DEFAULT_N_TRAIN if args.n_train is None else args.n_train
    return data.take(draw(data, n_train, args.random_state, "--n-train"))


def _fit_in_memory(
    args: argparse.Namespace, data: LabelledImages, progress: Progress
) -> tuple[Pipeline, bool]:
    """The pipeline fitted on all the images' features, extracted into memory once."""
    transformer = options.make_transformer(args, args.target_size, verbose=progress.enabled)
    X = transformer.fit_transform(data.images)
    transformer.set_params(verbose=0)
    clf = GroupLassoClassifier(
        alpha_fraction=args.alpha_fraction,
        keep_fraction=args.keep_fraction,
        renormalize_groups=transformer.feature_groups_ if args.renormalize_kept else None,
        max_iter=args.max_iter,
    )
    with progress.timed("Head2Toe fit"), hidden_warnings(ConvergenceWarning):  # noted below
        clf.fit(X, data.labels)
    pipeline = Pipeline([("features", transformer), ("head2toe", clf)])
    return pipeline, not clf.n_not_converged_


def _fit_head2toe(
    args: argparse.Namespace, data: LabelledImages, progress: Progress
) -> tuple[Pipeline, bool]:
    """The pipeline of a Head2ToeClassifier whose grid is this one point: for its
    selection on a subsample and its features on disk."""
    model = Head2ToeClassifier(**_head2toe_params(args), verbose=int(progress.enabled))
    with (
        progress.timed("Head2Toe fit"),
        hidden_warnings(ConvergenceWarning),  # noted by the caller
        disk_space_errors(),
    ):
        model.fit(data.images, data.labels)
    pipeline = model.best_estimator_
    pipeline["features"].set_params(verbose=0)
    return pipeline, not model.classifier_.n_not_converged_


def _head2toe_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **options.backbone_params(args),
        "target_sizes": [args.target_size],
        "alpha_fractions": [args.alpha_fraction],
        "keep_fractions": [args.keep_fraction],
        "renormalize_kept": args.renormalize_kept,
        "max_iter": args.max_iter,
        "cv": SELECTION_FOLDS,
        "random_state": args.random_state,
        **many_images_params(args),
    }


def _images(data: LabelledImages, selection: Selection) -> str:
    if selection.rows is None:
        return f"{len(data)} images"
    return f"{len(data)} images (features selected on {len(selection)})"
