"""Closed-set identification report: accuracy, per-speaker table, confusions, unseen speakers.

Store speakers are matched to the model's classes by name. Test items of a speaker the
model never saw cannot be right or wrong in a closed set, so they are left out of every
metric and reported on their own (how many, and whom the model took them for).

Macro averages run over the speakers that occur in the test data or in the predictions
(scikit-learn's default): a training speaker absent from the test data and never
predicted has no precision or recall to average.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxid import metrics
from voxid.augment import pseudo_voices
from voxid.errors import DataError
from voxid.evaluation.common import first_by_group, group_sources, mean_by_group

__all__ = ["Confusion", "identification_report", "pseudo_voices"]


@dataclass
class Confusion:
    """A confusion matrix with its row/column names (sorted by name) for CSV and plots."""

    matrix: np.ndarray
    names: list[str]
    level: str


def _level_metrics(
    scores: np.ndarray, y: np.ndarray, labels: list[str], top: int
) -> tuple[dict[str, Any], Confusion]:
    pred = scores.argmax(axis=1)
    present = np.unique(np.concatenate([y, pred]))
    # Sorted by name, so a speaker keeps its row and column across runs and plots.
    order = present[np.argsort([labels[i] for i in present], kind="stable")]
    names = [labels[i] for i in order]
    report = metrics.classification_report(y, pred, labels=order, names=names)
    cm = metrics.confusion_matrix(y, pred, labels=order)
    k = min(5, scores.shape[1])
    out = {
        "n": int(y.size),
        "top1_accuracy": metrics.topk_accuracy(scores, y, 1),
        "top5_accuracy": metrics.topk_accuracy(scores, y, k),
        "top5_k": k,
        "macro": report["macro"],
        "weighted": report["weighted"],
        "per_speaker": [
            {key: c[key] for key in ("name", "precision", "recall", "f1", "support", "predicted")}
            for c in report["per_class"]
        ],
        "most_confused": metrics.most_confused_pairs(cm, names, top=top),
    }
    return out, Confusion(cm, names, "")


def identification_report(
    speaker_names: np.ndarray,
    sources: np.ndarray,
    scores: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    *,
    top_confused: int = 10,
) -> tuple[dict[str, Any], dict[str, Confusion]]:
    """Identification metrics at chunk and file level.

    Arguments
    ---------
    speaker_names : (N,) true speaker name of each item (from the store).
    sources : (N,) source file of each item; a file's scores are its chunks' mean.
    scores : (N, C) class scores (logits or log-likelihoods) in the model's class order.
    probs : (N, C) class probabilities (file level averages these).
    labels : the model's speaker names by class index.

    Returns the JSON-ready report and the chunk/file confusion matrices.
    """
    names = np.asarray(speaker_names).astype(str)
    index = {name: i for i, name in enumerate(labels)}
    known = np.array([n in index for n in names])
    unseen = _unseen(names[~known], sources[~known], probs[~known], labels)
    if not known.any():
        raise DataError(
            "no test speaker is one of the model's speakers; evaluate with --verify instead"
        )
    y = np.array([index[n] for n in names[known]])
    chunk, chunk_cm = _level_metrics(scores[known], y, labels, top_confused)
    files, inverse = group_sources(sources[known])
    file_probs = mean_by_group(probs[known], inverse, len(files))
    file_y = first_by_group(y, inverse, len(files))
    file, file_cm = _level_metrics(file_probs, file_y, labels, top_confused)
    chunk_cm.level, file_cm.level = "chunk", "file"
    report = {
        "n_model_speakers": len(labels),
        "n_test_speakers": int(np.unique(names[known]).size),
        "chunk": chunk,
        "file": file,
        "unseen_speakers": unseen,
    }
    return report, {"chunk": chunk_cm, "file": file_cm}


def _unseen(
    names: np.ndarray, sources: np.ndarray, probs: np.ndarray, labels: list[str]
) -> list[dict[str, Any]]:
    out = []
    for name in sorted(set(names.tolist())):
        mask = names == name
        taken_for = Counter(labels[i] for i in probs[mask].argmax(axis=1))
        out.append(
            {
                "name": name,
                "items": int(mask.sum()),
                "files": int(np.unique(sources[mask]).size),
                "mean_top_probability": float(probs[mask].max(axis=1).mean()),
                "predicted_as": dict(taken_for.most_common(3)),
            }
        )
    return out
