"""The ``skh2t`` command line (also ``python -m skh2t``).

Subcommands, one module each: :mod:`~skh2t.cli.run` (the cross-validated
Head2Toe protocol against two baselines, :func:`skh2t.compare_methods`),
:mod:`~skh2t.cli.extract` (features to a ``.npz`` file), :mod:`~skh2t.cli.fit`
(a pipeline saved with joblib) and :mod:`~skh2t.cli.predict` (labels of images
from a saved pipeline). Helpers: :mod:`~skh2t.cli.options` (shared options),
:mod:`~skh2t.cli.data` (data sets and splits), :mod:`~skh2t.cli.extraction`
(tap tables), :mod:`~skh2t.cli.report`, :mod:`~skh2t.cli.plot`,
:mod:`~skh2t.cli.progress` and :mod:`~skh2t.cli.errors`.
"""

from skh2t.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
