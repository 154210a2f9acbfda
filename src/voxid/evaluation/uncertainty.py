"""Uncertainty by Monte-Carlo dropout: per-sample spread, entropy, calibration, flags.

For K stochastic passes the predictive distribution is the mean of the K softmax outputs.
Per sample we report the mean probability of the predicted class, its standard deviation
over the passes, the predictive entropy of the mean (total uncertainty) and the mutual
information (the part due to the model, which grows where the passes disagree). A sample
is flagged as uncertain when its predictive entropy exceeds the threshold, by default half
of the maximum ``log C``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxid import metrics
from voxid.errors import ConfigError


def per_sample(mc_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted class, mean probability, std, entropy and mutual information per sample.

    >>> s = per_sample(np.array([[[0.9, 0.1]], [[0.7, 0.3]]]))
    >>> s["pred"].tolist(), s["mean_prob"].round(2).tolist(), s["std"].round(2).tolist()
    ([0], [0.8], [0.1])
    """
    mean = mc_probs.mean(axis=0)
    pred = mean.argmax(axis=1)
    rows = np.arange(mean.shape[0])
    return {
        "pred": pred,
        "mean_prob": mean[rows, pred],
        "std": mc_probs[:, rows, pred].std(axis=0),
        "entropy": metrics.predictive_entropy(mean),
        "mutual_information": metrics.mutual_information(mc_probs),
        "mean": mean,
    }


def uncertainty_report(
    mc_probs: np.ndarray,
    det_probs: np.ndarray,
    y: np.ndarray | None,
    *,
    labels: list[str],
    item_ids: list[str],
    entropy_threshold: float | None = None,
    n_bins: int = 15,
    top: int = 20,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Summary, calibration and flagged samples of K MC-dropout passes.

    Arguments
    ---------
    mc_probs : (K, N, C) probabilities of the K passes.
    det_probs : (N, C) probabilities of the deterministic pass (for its ECE).
    y : (N,) true class indices, or None where the truth is not a model class.
    labels : class names; item_ids : a name per sample (``source#chunk``).
    entropy_threshold : nats; default ``0.5 * log C``.

    Returns the JSON-ready report and the arrays for plots and the per-sample CSV.
    """
    k, n, c = mc_probs.shape
    limit = 0.5 * np.log(c) if entropy_threshold is None else float(entropy_threshold)
    if limit < 0:
        raise ConfigError(f"entropy_threshold: must be >= 0, got {entropy_threshold}")
    s = per_sample(mc_probs)
    flagged = s["entropy"] > limit
    report: dict[str, Any] = {
        "mc_samples": k,
        "n": n,
        "entropy_threshold": limit,
        "mean_entropy": float(s["entropy"].mean()),
        "mean_std": float(s["std"].mean()),
        "mean_mutual_information": float(s["mutual_information"].mean()),
        "n_flagged": int(flagged.sum()),
    }
    arrays: dict[str, Any] = {"samples": s, "flagged": flagged}
    correct = None
    if y is not None:
        correct = s["pred"] == y
        report["accuracy_mc"] = float(correct.mean())
        report["ece_mc"] = metrics.expected_calibration_error(s["mean"], y, n_bins)
        report["ece_deterministic"] = metrics.expected_calibration_error(det_probs, y, n_bins)
        # Uncertainty is only useful if it points at errors: compare both groups.
        report["accuracy_flagged"] = float(correct[flagged].mean()) if flagged.any() else None
        report["accuracy_unflagged"] = float(correct[~flagged].mean()) if (~flagged).any() else None
        arrays["reliability_mc"] = metrics.reliability_curve(s["mean"], y, n_bins)
        arrays["reliability_det"] = metrics.reliability_curve(det_probs, y, n_bins)
    order = np.argsort(-s["entropy"], kind="stable")[:top]
    report["most_uncertain"] = [
        {
            "item": item_ids[i],
            "predicted": labels[s["pred"][i]],
            "true": None if y is None else labels[y[i]],
            "mean_prob": float(s["mean_prob"][i]),
            "std": float(s["std"][i]),
            "entropy": float(s["entropy"][i]),
        }
        for i in order
    ]
    arrays["correct"] = correct
    return report, arrays
