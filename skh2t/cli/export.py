"""``skh2t export``: a saved model to one ONNX, TorchScript or torch.export file."""

from __future__ import annotations

import argparse
import json
import os
import sys

from sklearn.exceptions import NotFittedError

from skh2t.cli import options
from skh2t.cli.errors import PROG, UsageError, usage_errors
from skh2t.cli.predict import load_model
from skh2t.export import (
    FORMATS,
    ONNX_OPSET,
    check_export_path,
    check_opset,
    compact_module,
    export_model,
    inference_cost,
    measure_latency,
    metadata,
)

DESCRIPTION = """\
Write a model saved by `skh2t fit` or `skh2t run` as one file that computes only
what its head reads: the taps with kept features (the backbone cut after the
deepest one), their pooling and normalisation, and the linear head over the
kept columns. The format follows the suffix of -o: .onnx (ONNX, needs
pip install "skh2t[export]"), .pt (TorchScript) or .pt2 (torch.export).

The file's input "images": a float32 batch (N, 3, S, S) of RGB values in
[0, 1], already resized to the model's image size S (grey images repeated to 3
channels); the mean/std normalisation is inside. Its output "logits":
(N, n_classes), in the order of the model's classes (printed, and stored in the
file's metadata: skh2t.export.read_metadata). The written file is checked
against the model on random images; what it costs per image is printed (its
FLOPs against the whole backbone's, and its latency on this CPU). A model file
is a pickle (joblib): loading it can run code, so export only files you trust."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``skh2t export``."""
    parser = subparsers.add_parser(
        "export",
        help="write a saved model as ONNX, TorchScript or torch.export",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a model saved by skh2t fit or skh2t run")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="the file to write: " + ", ".join(f"{s} ({f})" for s, f in FORMATS.items()),
    )
    parser.add_argument(
        "--opset",
        type=int,
        metavar="N",
        help=f"ONNX opset of a .onnx file: from {ONNX_OPSET} (the default) to the newest the "
        "installed exporter writes (skh2t.export.onnx_opsets)",
    )
    options.add_quiet_option(parser)
    parser.set_defaults(handler=run, blas_threads=0)


def run(args: argparse.Namespace) -> int:
    """Export the model and print what the file computes."""
    with usage_errors(ValueError, ImportError, context="-o"):
        check_export_path(args.output)
    onnx = os.path.splitext(args.output)[1].lower() == ".onnx"
    if args.opset is not None and not onnx:
        raise UsageError(f"--opset: only a .onnx file has an opset, not {args.output!r}")
    opset = ONNX_OPSET if args.opset is None else args.opset
    if onnx:
        with usage_errors(ValueError, context="--opset"):
            check_opset(opset)
    model = load_model(args.model, name="MODEL")
    try:
        module = compact_module(model)
    except (TypeError, NotFittedError) as error:
        raise UsageError(f"MODEL: {error}") from None
    if not args.quiet:
        print(f"{PROG} export: writing and checking {args.output} ...", file=sys.stderr)
    with usage_errors(ValueError):  # e.g. a file whose opset is not the one asked for
        export_model(module, args.output, opset_version=opset)
    size = os.path.getsize(args.output) / 1e6
    n_taps = len(module.readouts)
    print(
        f"wrote {args.output} ({FORMATS[os.path.splitext(args.output)[1].lower()]}, "
        f"{size:.1f} MB): input (N, 3, {module.image_size[0]}, {module.image_size[1]}) "
        f"in [0, 1], output (N, {len(module.classes_)}) logits; reads {module.n_features} "
        f"features from {n_taps} taps"
    )
    print("classes (in the file's metadata too): " + json.dumps(metadata(module)["classes"]))
    cost = inference_cost(model)
    latency = measure_latency(args.output, module.image_size)
    print(
        f"cost per image: {cost.flops / 1e6:.1f} MFLOPs, {cost.share:.1%} of the whole "
        f"backbone's {cost.backbone_flops / 1e6:.1f}; latency {latency * 1e3:.2f} ms on this CPU "
        "(one image, median of 20 calls of the file)"
    )
    return 0
