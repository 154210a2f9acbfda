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
    """Confusion matrix heat map as PNG (see `confusion_figure`)."""
    return _save(confusion_figure(cm, names, normalize=normalize, title=title), path)


def confusion_figure(
    cm: np.ndarray, names: list[str], *, normalize: bool = True, title: str = ""
) -> Any:
    """Confusion matrix heat map; rows are true speakers (with their item counts), columns
    predicted.

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
    # Row counts: a row-normalised 1.00 from 2 items is not one from 200.
    counts = cm.sum(axis=1).astype(int)
    ax.set_yticks(
        range(n), [f"{s} ({c})" for s, c in zip(names, counts, strict=True)], fontsize=font
    )
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
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true speaker's items" if normalize else "items")
    return fig


def det_roc_png(tar: np.ndarray, non: np.ndarray, path: Path, *, title: str = "") -> Path:
    """DET beside ROC curve as PNG (see `det_roc_figure`)."""
    return _save(det_roc_figure(tar, non, title=title), path)


def _diagonal_crossing(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Where the polyline (x, y) first meets x = y, interpolated on its segment.

    >>> [round(v, 3) for v in _diagonal_crossing(np.array([2.0, 0.0]), np.array([0.0, 1.0]))]
    [0.667, 0.667]
    """
    d = y - x
    hit = np.flatnonzero(d >= 0)
    if not hit.size:
        return float(x[-1]), float(y[-1])
    j = int(hit[0])
    if j == 0 or d[j] == 0:
        return float(x[j]), float(y[j])
    t = d[j - 1] / (d[j - 1] - d[j])  # d changes sign between j - 1 and j
    px = x[j - 1] + t * (x[j] - x[j - 1])
    return float(px), float(y[j - 1] + t * (y[j] - y[j - 1]))


def det_roc_figure(tar: np.ndarray, non: np.ndarray, *, title: str = "") -> Any:
    """DET curve (probit axes, as NIST plots it) beside the ROC curve, EER marked."""
    from scipy.special import ndtri  # the probit: DET axes are normal deviates

    plt = _plt()
    far, frr, _ = metrics.det_curve(tar, non)
    fpr, tpr, _ = metrics.roc_curve(tar, non)
    value, _ = metrics.eer(tar, non)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.6))
    eps = 1e-4  # probit of 0 and 1 is infinite; clip to the plotted range
    x, y = ndtri(np.clip(far, eps, 1 - eps)), ndtri(np.clip(frr, eps, 1 - eps))
    a.plot(x, y)
    # The EER is the convex hull's (metrics.eer), which the stepped empirical curve need
    # not pass through: mark where the drawn curve meets FAR = FRR, so the dot is on it.
    ex, ey = _diagonal_crossing(x, y)
    a.plot([ex], [ey], "o", label=f"EER {100 * value:.2f} %")
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
    return fig


def histogram_png(
    tar: np.ndarray,
    non: np.ndarray,
    path: Path,
    *,
    threshold: float | None = None,
    calibrated: float | None = None,
    title: str = "",
) -> Path:
    """Score histograms as PNG (see `histogram_figure`)."""
    fig = histogram_figure(tar, non, threshold=threshold, calibrated=calibrated, title=title)
    return _save(fig, path)


def histogram_figure(
    tar: np.ndarray,
    non: np.ndarray,
    *,
    threshold: float | None = None,
    calibrated: float | None = None,
    title: str = "",
) -> Any:
    """Target and non-target score histograms (densities), with the `threshold` (e.g.
    the EER's) and the `calibrated` (deployed) threshold when given."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    lo, hi = float(min(tar.min(), non.min())), float(max(tar.max(), non.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 50)
    ax.hist(non, bins=bins, density=True, alpha=0.6, label=f"non-target ({non.size})")
    ax.hist(tar, bins=bins, density=True, alpha=0.6, label=f"target ({tar.size})")
    if threshold is not None:
        # grey and dashed beside a calibrated one: the line decisions are made at stands out
        style = {"color": "grey", "linestyle": ":"} if calibrated is not None else {}
        ax.axvline(
            threshold, **({"color": "black", "linestyle": "--"} | style),
            label=f"threshold {threshold:.3f}",
        )  # fmt: skip
    if calibrated is not None:
        ax.axvline(calibrated, color="black", label=f"calibrated threshold {calibrated:.3f}")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title or "score distributions")
    ax.legend()
    return fig


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
