"""Exploratory data analysis of a corpus or a prepared store, and spectrogram images.

`run_eda` writes PNGs (matplotlib, Agg backend) and a `report.md` that shows them with the
numbers that matter before training: files and audio per speaker (class balance), the
distribution of every manifest column, durations, chunks per file, each speaker's mean
spectrum, and a 2-D t-SNE of per-file mean features coloured by speaker.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

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
    from voxid.data._eda_plots import write_report

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
