"""Report figures (matplotlib, Agg backend): confusion matrix, DET/ROC, histograms, reliability.

Every function draws one figure, writes it as PNG atomically and returns the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from voxid import metrics
from voxid.evaluation.common import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def confusion_png(
    cm: np.ndarray, names: list[str], path: Path, *, normalize: bool = True, title: str = ""
) -> Path:
    """Confusion matrix heat map; rows are true speakers, columns predicted.

    Figure and font sizes grow and shrink with the number of speakers so that 60 names
    stay legible; cell values are printed only while they fit (up to 30 speakers).
    `normalize` shows each row as shares of the true speaker's items.
    """
    from matplotlib.colors import PowerNorm

    plt = _plt()
    n = len(names)
    m = cm.astype(np.float64)
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = float(np.clip(0.3 * n + 3.0, 5.0, 26.0))
    # Tick labels sized to the cells they name: about 40 % of a cell's height in points.
    font = float(np.clip(0.4 * side * 72 / max(n, 1), 6.0, 11.0))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    vmax = 1.0 if normalize else max(float(m.max()), 1.0)
    # A square-root colour scale keeps rare confusions visible beside a strong diagonal.
    im = ax.imshow(m, cmap="Blues", norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=vmax))
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted speaker", fontsize=font + 1)
    ax.set_ylabel("true speaker", fontsize=font + 1)
    ax.set_title(title or ("confusion (row-normalised)" if normalize else "confusion (counts)"))
    if n <= 30:
        for i, j in zip(*np.nonzero(cm), strict=True):
            text = f"{m[i, j]:.2f}" if normalize else str(int(cm[i, j]))
            dark = m[i, j] > 0.3 * vmax
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=font * 0.8,
                color="white" if dark else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def det_roc_png(tar: np.ndarray, non: np.ndarray, path: Path, *, title: str = "") -> Path:
    """DET curve (probit axes, as NIST plots it) beside the ROC curve, EER marked."""
    from scipy.special import ndtri  # the probit: DET axes are normal deviates

    plt = _plt()
    far, frr, _ = metrics.det_curve(tar, non)
    fpr, tpr, _ = metrics.roc_curve(tar, non)
    value, _ = metrics.eer(tar, non)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.6))
    eps = 1e-4  # probit of 0 and 1 is infinite; clip to the plotted range
    a.plot(ndtri(np.clip(far, eps, 1 - eps)), ndtri(np.clip(frr, eps, 1 - eps)))
    a.plot(*[ndtri(np.clip([value], eps, 1 - eps))] * 2, "o", label=f"EER {100 * value:.2f} %")
    ticks = np.array([0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    for setter in (a.set_xticks, a.set_yticks):
        setter(ndtri(ticks), [f"{100 * t:g}" for t in ticks])
    lims = ndtri([0.0005, 0.9])  # the usual DET window; the curve's ends leave it
    a.set_xlim(*lims)
    a.set_ylim(*lims)
    a.set_xlabel("false acceptance rate (%)")
    a.set_ylabel("false rejection rate (%)")
    a.set_title("DET")
    a.grid(alpha=0.3)
    a.legend()
    b.plot(fpr, tpr)
    b.plot([0, 1], [0, 1], ":", color="grey")
    b.set_xlabel("false acceptance rate")
    b.set_ylabel("true acceptance rate")
    b.set_title("ROC")
    b.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def histogram_png(
    tar: np.ndarray, non: np.ndarray, path: Path, *, threshold: float | None = None, title: str = ""
) -> Path:
    """Target and non-target score histograms (densities), with the threshold if given."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    lo, hi = float(min(tar.min(), non.min())), float(max(tar.max(), non.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 50)
    ax.hist(non, bins=bins, density=True, alpha=0.6, label=f"non-target ({non.size})")
    ax.hist(tar, bins=bins, density=True, alpha=0.6, label=f"target ({tar.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title or "score distributions")
    ax.legend()
    return _save(fig, path)


def reliability_png(curves: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin, one line per curve."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for name, c in curves.items():
        used = c["count"] > 0
        ax.plot(c["confidence"][used], c["accuracy"][used], "o-", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability")
    ax.legend(loc="upper left")
    return _save(fig, path)


def entropy_png(
    entropy: np.ndarray, correct: np.ndarray | None, threshold: float, path: Path
) -> Path:
    """Predictive entropy histogram, split into right and wrong predictions when known."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, max(float(entropy.max()), threshold) + 1e-6, 40)
    if correct is None:
        ax.hist(entropy, bins=bins, alpha=0.7, label="all")
    else:
        ax.hist(entropy[correct], bins=bins, alpha=0.6, label="correct")
        ax.hist(entropy[~correct], bins=bins, alpha=0.6, label="wrong")
    ax.axvline(threshold, color="black", linestyle="--", label="flag threshold")
    ax.set_xlabel("predictive entropy (nats)")
    ax.set_ylabel("samples")
    ax.legend()
    return _save(fig, path)
