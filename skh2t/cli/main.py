"""The ``skh2t`` command: the parser with its subcommands, and error handling."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from skh2t import __version__
from skh2t.cli import export, extract, finetune, fit, predict, run
from skh2t.cli.errors import EXIT_INTERRUPTED, EXPECTED_ERRORS, PROG, UsageError, report
from skh2t.threads import blas_threads

DESCRIPTION = """\
Head2Toe transfer learning from pretrained vision backbones (Evci et al., ICML
2022): features from every layer, a group-lasso probe that keeps the ones that
matter. Every subcommand has --help."""

EPILOG = """\
examples:
  skh2t run                                  # Fashion-MNIST, Lite0, 1000 images
  skh2t run --dataset photos/ --n-train 500 --image-size 224
  skh2t fit --dataset photos/ -o model.joblib
  skh2t predict --model model.joblib --folder new_photos/
  skh2t finetune --dataset photos/ --n-train 500 --output-dir tuned/
  skh2t predict --model tuned/model.joblib --folder new_photos/
  skh2t export model.joblib -o model.onnx"""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit 2), as every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``skh2t`` argument parser (its subcommands' parsers are of the same class)."""
    parser = OneLineErrorParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in (run, extract, fit, predict, finetune, export):
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skh2t`` command line.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments (without the program name); ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        The exit code: 0 on success, 2 for a usage error (reported in one line
        on stderr, without a traceback), 130 when interrupted. argparse's own
        errors and ``--help`` exit through ``SystemExit``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        with blas_threads(args.blas_threads):
            return args.handler(args)
    except (UsageError, *EXPECTED_ERRORS) as error:
        return report(error)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
