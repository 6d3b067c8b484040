"""``skh2t predict``: load a saved model; images or a folder in, ``path<TAB>label`` lines out."""

from __future__ import annotations

import argparse
from typing import Any

import joblib
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from skh2t import Head2ToeClassifier
from skh2t.cli import options
from skh2t.cli.data import check_readable, list_image_files
from skh2t.cli.errors import UsageError, one_line
from skh2t.features import IntermediateFeatureTransformer
from skh2t.finetune import FineTuneClassifier
from skh2t.progress import progress_bar

CHUNK = 256  # images per prediction call


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``skh2t predict``."""
    parser = subparsers.add_parser(
        "predict",
        help="predict the classes of images with a saved model",
        description="Predict with a model saved by `skh2t fit`, `skh2t run` or `skh2t finetune`; "
        "print one 'path<TAB>label' line per image, in the order given (folders: sorted, "
        "recursive). "
        "A model file is a pickle (joblib): loading it can run code, so load only files you "
        "trust.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="image files")
    parser.add_argument(
        "--model",
        required=True,
        metavar="FILE",
        help="a model saved by skh2t fit, skh2t run or skh2t finetune",
    )
    parser.add_argument(
        "--folder", metavar="DIR", help="also predict every image under this folder"
    )
    group = parser.add_argument_group("runtime")
    options.add_runtime_options(group)
    options.add_quiet_option(parser)
    parser.set_defaults(handler=run, device=None, precision=None, batch_size=None)


def run(args: argparse.Namespace) -> int:
    """Print the predicted label of every image."""
    if args.device is not None:
        options.check_device(args.device)
    model = load_model(args.model)
    _configure(model, args)
    _check_precision(model)
    files = list_image_files(args.files, args.folder)
    check_readable(files)
    with progress_bar(total=len(files), unit="img", desc="Predicting", disable=args.quiet) as bar:
        for start in range(0, len(files), CHUNK):
            chunk = files[start : start + CHUNK]
            for path, label in zip(chunk, model.predict(chunk), strict=True):
                print(f"{path}\t{label}")
            bar.update(len(chunk))
    return 0


def load_model(path: str, *, name: str = "--model") -> Any:
    """Load a fitted skh2t model saved with joblib; anything else is a :class:`UsageError`.

    A skh2t model takes images: a :class:`~skh2t.Head2ToeClassifier`, a
    :class:`~skh2t.FineTuneClassifier`, or a ``Pipeline`` whose first step is an
    :class:`~skh2t.features.IntermediateFeatureTransformer` (as ``skh2t fit`` saves).
    ``name`` is how the command line calls the argument, for the messages.
    """
    try:
        model = joblib.load(path)
    except FileNotFoundError:
        raise UsageError(f"{name}: file not found: {path!r}") from None
    except IsADirectoryError:
        raise UsageError(f"{name}: {path!r} is a directory, not a model file") from None
    except PermissionError:
        raise UsageError(f"{name}: cannot read {path!r}: permission denied") from None
    except Exception as error:  # unpickling foreign bytes can fail in any way
        raise UsageError(
            f"{name}: {path!r} is not a skh2t model ({NOT_A_MODEL_HINT}): it could not be "
            f"loaded ({type(error).__name__}: {one_line(error)})"
        ) from None
    if not is_skh2t_model(model):
        raise UsageError(
            f"{name}: {path!r} holds a {type(model).__name__}, not a skh2t model "
            f"({NOT_A_MODEL_HINT})"
        )
    steps = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    try:
        for step in steps:
            check_is_fitted(step)
    except NotFittedError as error:
        raise UsageError(f"{name}: {one_line(error)}") from None
    return model


NOT_A_MODEL_HINT = "a file saved by skh2t fit or skh2t run"


def is_skh2t_model(model: Any) -> bool:
    """Whether ``model`` is an estimator of images that skh2t built (see :func:`load_model`)."""
    if isinstance(model, (Head2ToeClassifier, FineTuneClassifier)):
        return True
    return isinstance(model, Pipeline) and isinstance(
        model.steps[0][1], IntermediateFeatureTransformer
    )


RUNTIME_OPTIONS = ("device", "precision", "batch_size")


def _configure(model: Any, args: argparse.Namespace) -> None:
    """Apply --device, --precision and --batch-size to the model's feature transformer,
    if it has one."""
    given = {name: getattr(args, name) for name in RUNTIME_OPTIONS}
    given = {name: value for name, value in given.items() if value is not None}
    for extractor in _extractors(model):
        extractor.set_params(**given)
        if isinstance(extractor, IntermediateFeatureTransformer):
            extractor.set_params(verbose=0)


def _extractors(model: Any) -> list[Any]:
    """What runs the backbone: the classifier, or a pipeline's feature transformers."""
    if isinstance(model, (Head2ToeClassifier, FineTuneClassifier)):
        return [model]
    if not isinstance(model, Pipeline):
        return []
    return [step for _, step in model.steps if isinstance(step, IntermediateFeatureTransformer)]


def _check_precision(model: Any) -> None:
    """Fail in one line, before any image is read, on a precision the device cannot run."""
    for extractor in _extractors(model):
        options.check_precision(extractor.precision, extractor.device, fallback_to_cpu=True)
