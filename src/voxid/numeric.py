"""Small numpy helpers shared by every layer: row L2 normalisation and softmax.

They sit in the lowest layer (numpy only, no voxid import) so that inference, evaluation,
calibration and diarization compute the same numbers with the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["NORM_FLOOR", "normalize_rows", "softmax"]

#: Norms below this are treated as this, so a zero row stays zero instead of becoming NaN.
NORM_FLOOR = 1e-12


def normalize_rows(x: Any, dtype: DTypeLike | None = np.float32) -> np.ndarray:
    """Scale each row (the last axis) of `x` to unit L2 length.

    Zero rows stay zero (the norm is floored at `NORM_FLOOR`); NaN rows stay NaN.

    Arguments
    ---------
    x : array_like
        Vectors ``(..., D)``, e.g. embeddings ``(N, D)``.
    dtype : numpy dtype or None
        The precision it is computed and returned in: float32 (the default, the
        embeddings' own), float64, or None for `x`'s own dtype.

    Returns
    -------
    numpy.ndarray
        The rows of `x` divided by their norms, same shape.

    Example
    -------
    >>> normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    >>> normalize_rows(np.array([[3.0, 4.0]]), dtype=np.float64).tolist()
    [[0.6, 0.8]]
    """
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), NORM_FLOOR)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` scores, in their own dtype, stable for large scores.

    No columns (a model without classes, such as the shipped base encoder) gives no columns.

    Arguments
    ---------
    scores : numpy.ndarray
        Logits ``(N, C)``.

    Returns
    -------
    numpy.ndarray
        Probabilities ``(N, C)``, each row summing to 1.

    Example
    -------
    >>> softmax(np.array([[0.0, 0.0], [1000.0, 0.0]])).round(3).tolist()
    [[0.5, 0.5], [1.0, 0.0]]
    >>> softmax(np.zeros((2, 0))).shape
    (2, 0)
    """
    if scores.shape[-1] == 0:
        return scores.copy()
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
