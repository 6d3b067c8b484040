"""Compact, lossless pickling of the wide fitted arrays of the group-lasso classifiers.

With Head2Toe features (hundreds of thousands of columns), most of what a
fitted classifier holds is one entry per feature: ``coef_`` and
``group_lasso_coef_`` (per class, mostly zero columns), ``feature_scores_``
(zero where the penalised coefficients are), the default groups (``arange``
and weights of one) and the re-normalisation groups (small integers). Pickled
as they are, they make a model that reads a tenth of the columns several
times larger than it needs to be (docs/benchmarks.rst, "Prediction in bounded
memory", has both sizes). :class:`CompactStateMixin` stores them packed and
unpacks them on loading, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_SPARSE_COLUMNS = ("coef_", "group_lasso_coef_", "feature_scores_")
_NARROW_INTEGERS = ("renormalize_index_", "group_labels_")
_MIN_SIZE = 1024  # smaller arrays are stored as they are


@dataclass
class _SparseColumns:
    """An array whose last axis is mostly zero, as its non-zero positions and their values."""

    shape: tuple[int, ...]
    positions: np.ndarray
    values: np.ndarray

    @classmethod
    def pack(cls, array: np.ndarray) -> _SparseColumns | np.ndarray:
        rows = array.reshape(-1, array.shape[-1])
        positions = np.flatnonzero(np.any(rows != 0, axis=0))
        if 2 * positions.size > array.shape[-1]:
            return array  # mostly non-zero: nothing to gain
        positions = positions.astype(np.min_scalar_type(array.shape[-1]))
        return cls(array.shape, positions, np.ascontiguousarray(rows[:, positions]))

    def unpack(self) -> np.ndarray:
        rows = np.zeros((self.values.shape[0], self.shape[-1]), dtype=self.values.dtype)
        rows[:, self.positions.astype(np.intp)] = self.values
        return rows.reshape(self.shape)


@dataclass
class _NarrowIntegers:
    """Integers stored in the smallest type that holds them, restored to their own type."""

    dtype: np.dtype
    values: np.ndarray

    @classmethod
    def pack(cls, array: np.ndarray) -> _NarrowIntegers | np.ndarray:
        if array.dtype.kind not in "iu" or array.min(initial=0) < 0:
            return array
        if np.array_equal(array, np.arange(array.size)):
            return _Arange(array.dtype, array.size)
        return cls(array.dtype, array.astype(np.min_scalar_type(array.max(initial=0))))

    def unpack(self) -> np.ndarray:
        return self.values.astype(self.dtype)


@dataclass
class _Arange:
    """``np.arange(size)`` of ``dtype``: the default group labels."""

    dtype: np.dtype
    size: int

    def unpack(self) -> np.ndarray:
        return np.arange(self.size, dtype=self.dtype)


@dataclass
class _Constant:
    """An array of one repeated value: the default group weights."""

    value: np.ndarray  # a 0-d array, with its dtype
    size: int

    @classmethod
    def pack(cls, array: np.ndarray) -> _Constant | np.ndarray:
        if array.ndim != 1 or not np.all(array == array[0]):
            return array
        return cls(array[0].copy(), array.size)

    def unpack(self) -> np.ndarray:
        return np.full(self.size, self.value, dtype=self.value.dtype)


_PACKED = (_SparseColumns, _NarrowIntegers, _Arange, _Constant)


class CompactStateMixin:
    """``__getstate__`` / ``__setstate__`` that pack the wide fitted arrays losslessly."""

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        for name, value in state.items():
            if not isinstance(value, np.ndarray) or value.size < _MIN_SIZE:
                continue
            if name in _SPARSE_COLUMNS and value.dtype.kind == "f":
                state[name] = _SparseColumns.pack(value)
            elif name in _NARROW_INTEGERS:
                state[name] = _NarrowIntegers.pack(value)
            elif name == "group_weights_":
                state[name] = _Constant.pack(value)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = {
            name: value.unpack() if isinstance(value, _PACKED) else value
            for name, value in state.items()
        }
        super().__setstate__(state)
