"""A timeline picture of a diarization: one lane per speaker, turns as coloured bars."""

from __future__ import annotations

from pathlib import Path

from voxid.diarization.rttm import Diarization

__all__ = ["plot_timeline"]


def plot_timeline(result: Diarization, path: str | Path, title: str = "") -> Path:
    """Write a PNG timeline of `result` (time in seconds across, one row per speaker,
    colours by speaker with a legend) to `path`, atomically; return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labels = result.labels
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    height = 1.2 + 0.45 * max(1, len(labels))
    fig, ax = plt.subplots(figsize=(10, height))
    for row, who in enumerate(labels):
        spans = [(s.start, s.duration) for s in result.segments if s.speaker == who]
        ax.broken_barh(spans, (row - 0.35, 0.7), color=colours(row % colours.N))
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.7, max(1, len(labels)) - 0.3)
    ax.invert_yaxis()
    ax.set_xlim(0, max(result.duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("speaker")
    ax.set_title(title or f"who spoke when ({len(labels)} speakers)")
    ax.grid(axis="x", alpha=0.3)
    if labels:
        handles = [Patch(color=colours(i % colours.N), label=w) for i, w in enumerate(labels)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
