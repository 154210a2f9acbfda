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


def unproject(projected: np.ndarray, mean: np.ndarray, weight: np.ndarray) -> np.ndarray | None:
    """The unit embeddings `x` behind `normalize((x - mean) @ weight)` (an LDA projection
    that keeps every dimension), or None when `weight` is not square and invertible.

    The projection drops only the length of `(x - mean) @ weight`; `x` is a unit vector, so
    that length is the one positive root of ``|mean + t * (p @ weight^-1)| = 1`` (a mean of
    unit vectors lies inside the unit ball, so exactly one root is positive).

    >>> rng = np.random.default_rng(0)
    >>> x = normalize_rows(rng.standard_normal((5, 4)))
    >>> m, w = 0.3 * x.mean(axis=0), rng.standard_normal((4, 4))
    >>> p = normalize_rows((x - m) @ w)
    >>> bool(np.allclose(unproject(p, m, w), x, atol=1e-5))
    True
    """
    w = np.asarray(weight, np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or np.linalg.matrix_rank(w) < w.shape[0]:
        return None
    m = np.asarray(mean, np.float64)
    v = np.asarray(projected, np.float64) @ np.linalg.inv(w)
    a = np.einsum("ij,ij->i", v, v)
    b = 2.0 * (v @ m)
    c = float(m @ m) - 1.0
    t = (-b + np.sqrt(np.maximum(b * b - 4.0 * a * c, 0.0))) / np.maximum(2.0 * a, 1e-12)
    return normalize_rows(m + t[:, None] * v, np.float32)
