"""``skh2t fit``: fit a Head2Toe pipeline on a data set and save it with joblib."""

from __future__ import annotations

import argparse

import joblib
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from skh2t import GroupLassoClassifier
from skh2t.cli import options
from skh2t.cli.data import DATASET_HELP, check_classes, check_readable, load_dataset
from skh2t.cli.data import stratified_subsample as draw
from skh2t.cli.progress import Progress
from skh2t.cli.warned import hidden_warnings
from skh2t.output_files import written_whole

DEFAULT_N_TRAIN = 1000
# What `skh2t run`'s cross-validation chose on its default Fashion-MNIST / Lite0 protocol.
DEFAULT_ALPHA = 0.03
DEFAULT_KEEP = 0.2

DESCRIPTION = """\
Fit Pipeline([IntermediateFeatureTransformer, GroupLassoClassifier]) on a data
set (features are extracted once) and save it with joblib. The classifier
predicts class names. `skh2t run` chooses --target-size, --alpha-fraction and
--keep-fraction by cross-validation; pass its choices here (the defaults are
its choices on Fashion-MNIST with Lite0 at 64 px)."""


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
        type=options.positive_int,
        metavar="N",
        help=f"class-balanced training images (default: {DEFAULT_N_TRAIN}, or all if fewer)",
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
    options.add_quiet_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Fit and save the pipeline."""
    progress = Progress(not args.quiet)
    options.check_output_file(args.output, "--output")
    options.check_backbone(args)
    data = load_dataset(args.dataset, "train")
    check_classes(data, "--dataset")
    if args.n_train is not None or len(data) > DEFAULT_N_TRAIN:
        n_train = DEFAULT_N_TRAIN if args.n_train is None else args.n_train
        data = data.take(draw(data, n_train, args.random_state, "--n-train"))
    # else: all the images, as the help says, balanced or not
    check_readable(data.images)
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
    if clf.n_not_converged_:
        progress.message("note: the solver stopped at --max-iter; consider raising it")
    with written_whole(args.output) as part:
        joblib.dump(Pipeline([("features", transformer), ("head2toe", clf)]), part)
    kept = int(clf.get_support().sum())
    print(f"wrote {args.output}: {len(data)} images, {kept} of {X.shape[1]} features kept")
    return 0
