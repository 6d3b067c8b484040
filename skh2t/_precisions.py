"""The values of the ``precision`` parameter and its default (no torch needed).

:mod:`skh2t.features.devices` resolves them; this module only names them, so
that estimators that load torch lazily (:class:`~skh2t.Head2ToeClassifier`)
validate the parameter without importing it.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PRECISION", "PRECISIONS"]

#: The values of the ``precision`` parameter.
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
#: The ``precision`` of every estimator and of the command line, unless given.
DEFAULT_PRECISION = "float32"
