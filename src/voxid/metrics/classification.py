"""Closed-set classification metrics: confusion matrix, per-class report, top-k accuracy.

All functions are pure (numpy in, numbers or arrays out). Precision, recall and F1 follow
scikit-learn's definitions with ``zero_division=0``: a class that is never predicted has
precision 0, a class with no true samples has recall 0, and no warning is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from voxid.errors import ConfigError, DataError, require_positive
from voxid.metrics._checks import labels_1d, same_length, score_matrix


def _label_index(labels: np.ndarray, values: np.ndarray, name: str) -> np.ndarray:
    """Map each value to its position in `labels`; a value not in `labels` is an error."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    pos = np.clip(np.searchsorted(ordered, values), 0, len(ordered) - 1)
    unknown = ordered[pos] != values
    if np.any(unknown):
        missing = sorted({str(v) for v in values[unknown]})
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(f"{name}: {len(missing)} value(s) not among the labels: {shown}")
    return order[pos]


def _resolve_labels(y_true: np.ndarray, y_pred: np.ndarray, labels: Any) -> np.ndarray:
    if labels is None:
        return np.unique(np.concatenate([y_true, y_pred]))
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError("labels: expected a non-empty 1-D sequence")
    if np.unique(arr).size != arr.size:
        raise ConfigError("labels: contains duplicates")
    return arr


def confusion_matrix(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    labels: Sequence | np.ndarray | None = None,
) -> np.ndarray:
    """Count matrix ``cm[i, j]`` = samples of true class ``labels[i]`` predicted ``labels[j]``.

    Arguments
    ---------
    y_true, y_pred : 1-D arrays of the same length (ints or strings).
    labels : the classes in row/column order; default: the sorted union of both arrays.
        A value outside `labels` raises `DataError` rather than being dropped silently.

    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1]).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    """
    yt = labels_1d(y_true, "y_true")
    yp = labels_1d(y_pred, "y_pred")
    same_length(yt, yp, "y_true/y_pred")
    labs = _resolve_labels(yt, yp, labels)
    ti = _label_index(labs, yt, "y_true")
    pi = _label_index(labs, yp, "y_pred")
    n = labs.size
    return np.bincount(ti * n + pi, minlength=n * n).reshape(n, n).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # zero_division=0 without numpy's RuntimeWarning: divide only where den > 0.
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_report(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    labels: Sequence | np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class and averaged precision, recall and F1 (a JSON-ready dict).

    Arguments
    ---------
    y_true, y_pred : 1-D arrays of class labels.
    labels : the classes to report, in order (default: sorted union). Macro averages run
        over all of them, as scikit-learn does when given ``labels``.
    names : display names for `labels` (default: ``str(label)``).

    Returns ``{"n_samples", "accuracy", "macro": {precision, recall, f1},
    "weighted": {...}, "per_class": [{label, name, precision, recall, f1, support,
    predicted}, ...]}``; weighted averages use the support (true count) as weight.

    >>> r = classification_report([0, 0, 1, 1], [0, 0, 0, 1])
    >>> r["accuracy"], r["per_class"][0]["precision"], r["macro"]["recall"]
    (0.75, 0.6666666666666666, 0.75)
    """
    yt = labels_1d(y_true, "y_true")
    yp = labels_1d(y_pred, "y_pred")
    labs = _resolve_labels(yt, yp, labels)
    if names is not None and len(names) != labs.size:
        raise ConfigError(f"names: {len(names)} names for {labs.size} labels")
    cm = confusion_matrix(yt, yp, labs)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    # 2tp / (2tp + fp + fn) equals the harmonic mean where both are defined, and is 0
    # (not NaN) for a class that is neither present nor predicted; as scikit-learn >= 1.3.
    f1 = _safe_div(2 * tp, support + predicted)
    total = support.sum()
    weights = support / total if total > 0 else np.zeros_like(support)

    def _avg(w: np.ndarray | None) -> dict[str, float]:
        pick = (lambda a: float(np.mean(a))) if w is None else (lambda a: float(np.dot(a, w)))
        return {"precision": pick(precision), "recall": pick(recall), "f1": pick(f1)}

    shown = [str(v) for v in labs] if names is None else [str(n) for n in names]
    per_class = [
        {
            "label": labs[i].item(),
            "name": shown[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
        for i in range(labs.size)
    ]
    return {
        "n_samples": int(yt.size),
        "accuracy": float(np.mean(yt == yp)),
        "macro": _avg(None),
        "weighted": _avg(weights),
        "per_class": per_class,
    }


def topk_accuracy(scores: np.ndarray, y: Sequence | np.ndarray, k: int = 1) -> float:
    """Fraction of samples whose true class is among the `k` highest scores.

    Arguments
    ---------
    scores : (N, C) class scores (logits or probabilities).
    y : (N,) true class indices in ``[0, C)``.
    k : how many top classes count as a hit; ``k >= C`` gives 1.0.

    Ties are broken towards the lower class index, as ``argmax`` does, so top-1 accuracy
    equals ``mean(argmax(scores) == y)`` and constant scores do not count as hits.

    >>> topk_accuracy(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]), [2, 1], k=2)
    0.5
    """
    s = score_matrix(scores, "scores")
    yi = labels_1d(y, "y")
    same_length(s, yi, "scores/y")
    require_positive("k", k, integer=True)
    if not np.issubdtype(yi.dtype, np.integer) or yi.min() < 0 or yi.max() >= s.shape[1]:
        raise DataError(f"y: expected class indices in [0, {s.shape[1]})")
    true = s[np.arange(s.shape[0]), yi][:, None]
    cols = np.arange(s.shape[1])[None, :]
    rank = np.sum((s > true) | ((s == true) & (cols < yi[:, None])), axis=1)
    return float(np.mean(rank < k))


def most_confused_pairs(
    cm: np.ndarray, names: Sequence[str] | None = None, top: int = 10
) -> list[dict[str, Any]]:
    """The largest off-diagonal cells of a confusion matrix, largest first.

    Each entry is ``{"true", "predicted", "count", "rate"}`` where ``rate`` is the share of
    the true class's samples that went to the predicted class. Empty cells are left out.

    >>> most_confused_pairs(np.array([[5, 3], [1, 4]]), ["ann", "bob"])
    [{'true': 'ann', 'predicted': 'bob', 'count': 3, 'rate': 0.375}, {'true': 'bob', \
'predicted': 'ann', 'count': 1, 'rate': 0.2}]
    """
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.size == 0:
        raise DataError(f"cm: expected a non-empty square matrix, got shape {m.shape}")
    labels = [str(i) for i in range(m.shape[0])] if names is None else list(names)
    if len(labels) != m.shape[0]:
        raise ConfigError(f"names: {len(labels)} names for {m.shape[0]} classes")
    off = m.astype(np.float64).copy()
    np.fill_diagonal(off, 0)
    rows = m.sum(axis=1)
    flat = np.argsort(-off, axis=None, kind="stable")[: max(int(top), 0)]
    out = []
    for idx in flat:
        i, j = divmod(int(idx), m.shape[1])
        if off[i, j] <= 0:
            break
        out.append(
            {
                "true": labels[i],
                "predicted": labels[j],
                "count": int(m[i, j]),
                "rate": float(m[i, j] / rows[i]),
            }
        )
    return out
