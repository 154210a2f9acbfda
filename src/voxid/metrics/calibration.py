"""Calibration and uncertainty: reliability diagram, ECE, predictive entropy, MC-dropout MI.

`probs` is an (N, C) array of class probabilities (rows sum to 1), or a 1-D array of
P(class 1) for a binary problem, which is read as ``[1 - p, p]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxid.errors import DataError, require_positive
from voxid.metrics._checks import labels_1d, same_length, score_matrix


def _probs(values: object, name: str = "probs") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = np.stack([1.0 - arr, arr], axis=1)
    p = score_matrix(arr, name)
    if p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise DataError(f"{name}: probabilities must lie in [0, 1]")
    if np.max(np.abs(p.sum(axis=1) - 1.0)) > 1e-3:
        raise DataError(f"{name}: rows must sum to 1 (pass softmax outputs, not logits)")
    return np.clip(p, 0.0, 1.0)


def reliability_curve(
    probs: np.ndarray, y: Sequence[int] | np.ndarray, n_bins: int = 15
) -> dict[str, np.ndarray]:
    """Per-bin confidence, accuracy and count for a reliability diagram.

    Confidence is the top class probability; bins split (0, 1] into `n_bins` equal
    widths (right-closed). Empty bins have count 0 and confidence/accuracy NaN.

    >>> c = reliability_curve(np.array([[0.9, 0.1], [0.6, 0.4]]), [0, 1], n_bins=2)
    >>> c["count"].tolist(), c["accuracy"].tolist()
    ([0, 2], [nan, 0.5])
    """
    p = _probs(probs)
    yi = labels_1d(y, "y")
    same_length(p, yi, "probs/y")
    require_positive("n_bins", n_bins, integer=True)
    if not np.issubdtype(yi.dtype, np.integer) or yi.min() < 0 or yi.max() >= p.shape[1]:
        raise DataError(f"y: expected class indices in [0, {p.shape[1]})")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == yi).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "confidence": mean_conf,
        "accuracy": accuracy,
        "count": count,
    }


def expected_calibration_error(
    probs: np.ndarray, y: Sequence[int] | np.ndarray, n_bins: int = 15
) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| per bin.

    Arguments
    ---------
    probs : (N, C) probabilities, or (N,) P(class 1) for binary problems.
    y : (N,) true class indices.
    n_bins : equal-width confidence bins over (0, 1].

    >>> expected_calibration_error(np.array([[0.9, 0.1], [0.6, 0.4]]), [0, 1], n_bins=2)
    0.25
    """
    c = reliability_curve(probs, y, n_bins)
    used = c["count"] > 0
    gaps = np.abs(c["accuracy"][used] - c["confidence"][used])
    return float(np.sum(gaps * c["count"][used]) / np.sum(c["count"]))


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy ``-sum p log p`` of each row, in nats (0 log 0 = 0); max is log C.

    >>> predictive_entropy(np.array([[1.0, 0.0], [0.5, 0.5]])).round(4).tolist()
    [0.0, 0.6931]
    """
    p = _probs(probs)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -np.sum(p * logs, axis=1) + 0.0  # + 0.0 turns -0.0 into 0.0


def mutual_information(sample_probs: np.ndarray) -> np.ndarray:
    """Epistemic uncertainty of K stochastic passes (MC dropout): H(mean) - mean(H).

    Arguments
    ---------
    sample_probs : (K, N, C) probabilities from K passes over N samples.

    >>> s = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two passes that disagree completely
    >>> mutual_information(s).round(4).tolist()
    [0.6931]
    """
    s = np.asarray(sample_probs, dtype=np.float64)
    if s.ndim != 3 or 0 in s.shape:
        raise DataError(f"sample_probs: expected a (passes, samples, classes) array, got {s.shape}")
    k, n, c = s.shape
    per_pass = predictive_entropy(s.reshape(k * n, c)).reshape(k, n)
    return np.maximum(predictive_entropy(s.mean(axis=0)) - per_pass.mean(axis=0), 0.0)
