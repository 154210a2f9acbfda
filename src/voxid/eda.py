"""Exploratory data analysis of a corpus or a prepared store, and spectrogram images.

`run_eda` writes PNGs (matplotlib, Agg backend) and a `report.md` that shows them with the
numbers that matter before training: files and audio per speaker (class balance), the
distribution of every manifest column, durations, chunks per file, each speaker's mean
spectrum, and a 2-D t-SNE of per-file mean features coloured by speaker. The figures and
`write_report` live in this module too.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, cast

import numpy as np

from voxid.errors import DataError, VoxidError, reason

__all__ = ["run_eda", "safe_name", "write_spectrogram_images"]


def safe_name(name: str) -> str:
    """A file-system-safe version of a speaker or file name (no separators, no dots first).

    >>> safe_name("../etc/passwd"), safe_name("asc30/00000001"), safe_name("a b:c")
    ('etc_passwd', 'asc30_00000001', 'a_b_c')
    """
    cleaned = re.sub(r"[^\w.-]+", "_", name).strip("._") or "_"
    return re.sub(r"_+", "_", cleaned.replace("..", "_"))


def write_spectrogram_images(
    corpus, out: str | Path, *, vad: bool = True
) -> tuple[int, list[tuple[str, str]]]:
    """Write `out/<speaker>/<file>.png` per file: the CNN recipe's image (`FeatureConfig.image()`
    at 22,050 Hz, after the default VAD unless `vad=False`, then `colorize`).

    The PNG holds exactly the pixels the seed CNN sees, in its layout: rows are time frames
    (first at the top), columns mel bins (lowest at the left), so reading a PNG back and
    dividing by 255 gives the CNN's input. Files whose names collide within a speaker
    folder get `_2`, `_3`... Returns (images written, skipped (path, reason)).
    """
    import torch
    from PIL import Image

    from voxid.audio import load_audio
    from voxid.features import FeatureConfig, build_frontend, colorize
    from voxid.vad import VadConfig

    cfg = FeatureConfig.image()
    frontend = build_frontend(cfg).eval()
    vad_cfg = VadConfig(enabled=vad)
    out = Path(out)
    written, skipped, taken = 0, [], set()
    for it in corpus.items:
        try:
            wav = vad_cfg.apply(load_audio(it.path, cfg.sample_rate), cfg.sample_rate)
            if wav.size == 0:
                raise DataError(f"{it.path}: no speech above the VAD threshold")
            with torch.inference_mode():
                rgb = colorize(frontend(torch.from_numpy(wav)[None]))[0]
            pixels = (rgb.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            folder = out / safe_name(it.speaker)
            stem = safe_name(it.path.stem)
            target, k = folder / f"{stem}.png", 1
            while target in taken:
                k += 1
                target = folder / f"{stem}_{k}.png"
            taken.add(target)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".png.tmp")
            Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
            tmp.replace(target)
            written += 1
        except VoxidError as exc:
            skipped.append((str(it.path), reason(exc, it.path)))
    return written, skipped


def _corpus_table(corpus, max_files: int, seed: int) -> dict[str, Any]:
    """Durations of every file (header only) and mean log-mel of a per-speaker sample."""
    import torch

    from voxid.audio import audio_info, load_audio
    from voxid.features import FeatureConfig, build_frontend

    cfg = FeatureConfig.logmel()
    frontend = build_frontend(cfg).eval()
    files = []
    skipped = list(corpus.skipped)
    for it in corpus.items:
        try:
            files.append(
                {
                    "speaker": it.speaker,
                    "source": str(it.path),
                    **it.extra,
                    "seconds": audio_info(it.path).duration,
                }
            )
        except VoxidError as exc:
            skipped.append((str(it.path), reason(exc, it.path)))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    per_speaker = max(1, max_files // max(1, len({f["speaker"] for f in files})))
    taken: dict[str, int] = defaultdict(int)
    for i in order:
        f = files[i]
        if taken[f["speaker"]] >= per_speaker:
            continue
        try:
            wav = load_audio(f["source"], cfg.sample_rate)
        except VoxidError:
            continue
        with torch.inference_mode():
            feats = frontend(torch.from_numpy(wav)[None])[0].numpy()
        f["mean"], f["std"] = feats.mean(0), feats.std(0)
        taken[f["speaker"]] += 1
    for f in files:
        f["chunks"] = int(f["seconds"] // 1.0 + (f["seconds"] % 1.0 >= 0.5))
    return {
        "files": files,
        "skipped": skipped,
        "feature": "log-mel (64 bins)",
        "chunks_note": "estimated from each file's duration (1 s chunks, before any VAD)",
    }


def _store_table(path: Path, max_files: int, seed: int) -> dict[str, Any]:
    """Per-source-file rows from a store: seconds and chunk counts from the item table,
    mean features from a sample of files."""
    import h5py

    from voxid.data.store import StoreInfo

    info = StoreInfo.open(path)
    t = info.items
    orig = np.flatnonzero((t["augment"] == "") & (t["copy"] == 0))
    by_source: dict[str, list[int]] = defaultdict(list)
    for i in orig:
        by_source[str(t["source"][i])].append(int(i))
    files = []
    for src, idx in by_source.items():
        i0 = idx[0]
        files.append(
            {
                "speaker": info.speakers[int(t["label"][i0])],
                "source": src,
                "split": str(t["split"][i0]),
                **{c: str(t[c][i0]) for c in info.extra_columns},
                "seconds": float(t["seconds"][idx].sum()),
                "chunks": len(idx),
                "_items": idx,
            }
        )
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(files))[:max_files]
    with h5py.File(path, "r") as h5:
        data = h5["data"]
        for k in sorted(pick):
            rows = [
                data[t["offset"][i] : t["offset"][i] + t["length"][i]] for i in files[k]["_items"]
            ]
            feats = np.concatenate(rows).reshape(sum(r.shape[0] for r in rows), -1)
            files[k]["mean"], files[k]["std"] = feats.mean(0), feats.std(0)
    for f in files:
        del f["_items"]
    return {
        "files": files,
        "skipped": [(s["path"], s["reason"]) for s in info.report.get("skipped", [])],
        "feature": info.feature_config.kind,
        "chunks_note": "as stored (after VAD, without augmented copies)",
    }


def run_eda(
    source: str | Path, out: str | Path, *, max_files: int = 600, seed: int = 0
) -> dict[str, Any]:
    """Analyse a corpus (folder or manifest) or a `.h5` store; write PNGs and `report.md`
    into `out`. Returns the summary numbers (also at the top of the report)."""
    source = Path(source)
    if source.suffix.lower() in (".h5", ".hdf5"):
        table = _store_table(source, max_files, seed)
    else:
        from voxid.data import load_corpus

        table = _corpus_table(load_corpus(source), max_files, seed)
    if not table["files"]:
        raise DataError(f"{source}: no readable audio files")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return write_report(table, out, title=source.name, seed=seed)


# The figures and the markdown report of `voxid eda` (they were data/_eda_plots.py, which
# imported `safe_name` from here while this module imported `write_report` from there).

_MAX_LEVELS = 40  # a column with more distinct values is summarised, not plotted


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    _plt().close(fig)
    return name


def _balance(files, out: Path) -> tuple[str, dict]:
    plt = _plt()
    n = Counter(f["speaker"] for f in files)
    secs: dict[str, float] = defaultdict(float)
    for f in files:
        secs[f["speaker"]] += f["seconds"]
    speakers = sorted(n)
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.25 * len(speakers) + 2), 6), sharex=True)
    x = np.arange(len(speakers))
    axes[0].bar(x, [n[s] for s in speakers], color="tab:blue")
    axes[0].set_ylabel("files")
    axes[1].bar(x, [secs[s] / 60 for s in speakers], color="tab:orange")
    axes[1].set_ylabel("minutes of audio")
    axes[1].set_xticks(
        x, speakers if len(speakers) <= 60 else [""] * len(speakers), rotation=90, fontsize=7
    )
    axes[0].set_title("Class balance: files and audio per speaker")
    counts = np.array([n[s] for s in speakers])
    return _save(fig, out, "balance.png"), {
        "files_per_speaker_min": int(counts.min()),
        "files_per_speaker_max": int(counts.max()),
        "imbalance_ratio": round(float(counts.max() / counts.min()), 3),
    }


def _columns(files, out: Path) -> list[tuple[str, str | None, int]]:
    plt = _plt()
    skip = {"speaker", "source", "seconds", "chunks", "mean", "std", "path"}
    cols = sorted({k for f in files for k in f if k not in skip})
    res: list[tuple[str, str | None, int]] = []
    for col in cols:
        counts = Counter(str(f.get(col, "")) for f in files)
        if len(counts) > _MAX_LEVELS:
            res.append((col, None, len(counts)))
            continue
        keys = sorted(counts)
        fig, ax = plt.subplots(figsize=(max(4, 0.3 * len(keys) + 2), 3))
        ax.bar(range(len(keys)), [counts[k] for k in keys], color="tab:green")
        ax.set_xticks(range(len(keys)), keys, rotation=90 if len(keys) > 8 else 0, fontsize=8)
        ax.set_ylabel("files")
        ax.set_title(f"Files per {col}")
        res.append((col, _save(fig, out, f"column_{safe_name(col)}.png"), len(counts)))
    return res


def _durations(files, out: Path) -> tuple[str, str]:
    plt = _plt()
    d = np.array([f["seconds"] for f in files])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(d, bins=min(50, max(5, len(d) // 10)), color="tab:purple")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("files")
    ax.set_title("Duration of files")
    hist = _save(fig, out, "durations.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(d, [f["chunks"] for f in files], s=6, alpha=0.5)
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("chunks")
    ax.set_title("Chunks per file against duration")
    return hist, _save(fig, out, "chunks.png")


def _mean_spectra(files, out: Path, feature: str) -> str | None:
    by: dict[str, list[np.ndarray]] = defaultdict(list)
    for f in files:
        if "mean" in f:
            by[f["speaker"]].append(f["mean"])
    if not by:
        return None
    return _save(_mean_spectra_figure(by, feature), out, "mean_spectra.png")


def _mean_spectra_figure(by: dict[str, list[np.ndarray]], feature: str) -> Any:
    """Heat map of each speaker's mean feature vector, its colour bar labelled."""
    plt = _plt()
    speakers = sorted(by)
    img = np.stack([np.mean(by[s], axis=0) for s in speakers])
    fig, ax = plt.subplots(figsize=(7, max(3, 0.18 * len(speakers) + 1.5)))
    im = ax.imshow(img, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
    ax.set_yticks(
        range(len(speakers)), speakers if len(speakers) <= 60 else [""] * len(speakers), fontsize=6
    )
    ax.set_xlabel(f"{feature} bin (low to high)")
    ax.set_title("Mean spectrum of each speaker")
    fig.colorbar(im, ax=ax, label=f"mean {feature} value")
    return fig


def _group_spectra(files, out: Path, col: str, feature: str) -> str | None:
    """Mean spectrum per level of a manifest column (gender, group...), one line each."""
    by: dict[str, list[np.ndarray]] = defaultdict(list)
    for f in files:
        if "mean" in f:
            by[str(f.get(col, ""))].append(f["mean"])
    if not 2 <= len(by) <= 8:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for level in sorted(by):
        ax.plot(np.mean(by[level], axis=0), label=f"{level or '(empty)'} ({len(by[level])})")
    ax.set_xlabel(f"{feature} bin (low to high)")
    ax.set_title(f"Mean spectrum by {col}")
    ax.legend(fontsize=7)
    return _save(fig, out, f"spectra_{safe_name(col)}.png")


def _tsne(files, out: Path, seed: int) -> str | None:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    rows = [f for f in files if "mean" in f]
    if len(rows) < 5:
        return None
    x = np.stack([np.concatenate([f["mean"], f["std"]]) for f in rows])
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    # One thread: OpenMP Barnes-Hut with many threads crawls on a busy machine, and a
    # single thread gives the same picture on every run.
    with threadpool_limits(1):
        emb = TSNE(
            2,
            perplexity=min(30.0, (len(rows) - 1) / 3),
            init="pca",
            max_iter=500,
            random_state=seed,
        ).fit_transform(x)
    return _save(_tsne_figure([f["speaker"] for f in rows], emb), out, "tsne.png")


def _palette(n: int) -> list[tuple[float, float, float]]:
    """`n` colours far apart: tab10, then, up to 20, the qualitative colours farthest from
    those already taken (min RGB distance 0.25), then evenly spaced hues.

    tab20 pairs each hue with a light shade (light blue and light cyan are 0.1 apart), and
    a colormap stretched over the speakers gives neighbours near-identical colours.
    """
    import matplotlib
    from matplotlib.colors import ListedColormap

    maps = matplotlib.colormaps

    def rgb(name: str) -> np.ndarray:
        # The qualitative maps are lists of colours: their RGB rows `(n, 3)`.
        return np.asarray(cast(ListedColormap, maps[name]).colors, dtype=float)[:, :3]

    if n > 20:
        return [tuple(maps["nipy_spectral"](v)[:3]) for v in np.linspace(0.05, 0.95, n)]
    pool = np.concatenate([rgb(m) for m in ("tab20", "Set1", "Dark2", "Accent", "Set2")])
    chosen = list(rgb("tab10"))
    while len(chosen) < n:  # greedy farthest point: deterministic and far enough here
        gap = np.linalg.norm(pool[:, None] - np.array(chosen)[None], axis=-1).min(axis=1)
        chosen.append(pool[int(gap.argmax())])
    return [(float(c[0]), float(c[1]), float(c[2])) for c in chosen[:n]]


def _tsne_figure(labels: list[str], emb: np.ndarray) -> Any:
    """The 2-D embedding coloured by speaker; the legend (up to 20) sits outside the axes so
    it hides no cluster."""
    plt = _plt()
    speakers = sorted(set(labels))
    colours = dict(zip(speakers, _palette(len(speakers)), strict=True))
    who = np.array(labels)
    fig, ax = plt.subplots(figsize=(7.5 if len(speakers) <= 20 else 6, 5))
    for spk in speakers:
        pts = emb[who == spk]
        ax.scatter(pts[:, 0], pts[:, 1], color=colours[spk], s=8, label=spk)
    if len(speakers) <= 20:
        ax.legend(
            fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
            markerscale=1.5,
        )  # fmt: skip
    ax.set_title("t-SNE of per-file mean features, by speaker")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def write_report(table: dict[str, Any], out: Path, *, title: str, seed: int) -> dict:
    """Draw every figure into `out` and write `report.md`; return the summary numbers."""
    files = table["files"]
    d = np.array([f["seconds"] for f in files])
    balance, bal = _balance(files, out)
    summary = {
        "files": len(files),
        "speakers": len({f["speaker"] for f in files}),
        "hours": round(float(d.sum()) / 3600, 4),
        "duration_min_s": round(float(d.min()), 3),
        "duration_median_s": round(float(np.median(d)), 3),
        "duration_max_s": round(float(d.max()), 3),
        "chunks": int(sum(f["chunks"] for f in files)),
        **bal,
        "skipped": len(table["skipped"]),
    }
    hist, chunks = _durations(files, out)
    cols = _columns(files, out)
    spectra = _mean_spectra(files, out, table["feature"])
    tsne = _tsne(files, out, seed)
    md = [
        f"# Data report: {title}",
        "",
        f"{summary['files']} files from {summary['speakers']} speakers, "
        f"{summary['hours']:.3f} hours of audio. Duration min / median / max: "
        f"{summary['duration_min_s']} / {summary['duration_median_s']} / "
        f"{summary['duration_max_s']} s. {summary['skipped']} inputs skipped.",
        "",
        "## Class balance",
        "",
        f"Files per speaker range from {bal['files_per_speaker_min']} to "
        f"{bal['files_per_speaker_max']} (imbalance ratio {bal['imbalance_ratio']}). "
        "A ratio well above 1 calls for oversampling or class weights.",
        "",
        f"![balance]({balance})",
        "",
        "## Durations",
        "",
        f"![durations]({hist})",
        "",
        f"{summary['chunks']} chunks in all, {table['chunks_note']}.",
        "",
        f"![chunks]({chunks})",
        "",
    ]
    if cols:
        md += ["## Manifest columns", ""]
        for col, img, n in cols:
            md += [f"![{col}]({img})", ""] if img else [f"`{col}`: {n} distinct values.", ""]
    for col, img, _ in cols:
        group_img = _group_spectra(files, out, col, table["feature"]) if img else None
        if group_img:
            md += [f"![mean spectrum by {col}]({group_img})", ""]
    if spectra:
        md += [
            "## Mean spectra",
            "",
            f"Mean {table['feature']} over a sample of each "
            "speaker's files; rows that differ are speakers a model can tell apart.",
            "",
            f"![mean spectra]({spectra})",
            "",
        ]
    if tsne:
        md += [
            "## t-SNE",
            "",
            "Per-file mean and standard deviation of the features, "
            "projected to 2-D. Tight, separate clusters mean an easy task.",
            "",
            f"![t-SNE]({tsne})",
            "",
        ]
    if table["skipped"]:
        md += ["## Skipped inputs", ""] + [f"- `{p}`: {r}" for p, r in table["skipped"]] + [""]
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(md), encoding="utf-8")
    tmp.replace(out / "report.md")
    return summary
