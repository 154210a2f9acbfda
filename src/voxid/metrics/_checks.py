"""Input checks shared by the metric functions: one-line errors instead of numpy surprises."""

from __future__ import annotations

import numpy as np

from voxid.errors import ConfigError, DataError


def scores_1d(values: object, name: str) -> np.ndarray:
    """Return `values` as a non-empty, finite, 1-D float64 array or raise `DataError`."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array of scores, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{name}: no scores (empty array)")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}: {int(np.sum(~np.isfinite(arr)))} scores are NaN or infinite")
    return arr


def labels_1d(values: object, name: str) -> np.ndarray:
    """Return `values` as a non-empty 1-D array (any dtype) or raise `DataError`."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array of labels, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{name}: no samples (empty array)")
    return arr


def score_matrix(values: object, name: str) -> np.ndarray:
    """Return `values` as a non-empty, finite (N, C) float64 array or raise `DataError`."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: expected a non-empty (samples, classes) array, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}: contains NaN or infinite values")
    return arr


def same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    """Raise `DataError` unless the two arrays have the same first dimension."""
    if a.shape[0] != b.shape[0]:
        raise DataError(f"{names}: lengths differ ({a.shape[0]} vs {b.shape[0]})")


def probability(value: float, name: str, *, open_interval: bool = False) -> float:
    """Check that `value` lies in [0, 1] (or (0, 1)) and return it as a float."""
    v = float(value)
    ok = 0.0 < v < 1.0 if open_interval else 0.0 <= v <= 1.0
    if not ok:
        bounds = "(0, 1)" if open_interval else "[0, 1]"
        raise ConfigError(f"{name}: must lie in {bounds}, got {value!r}")
    return v
