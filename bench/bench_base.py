"""The shipped base model: size, embedding speed and latency (as bench_embed measures every
model), and how long its training took (from the run that `make base-model` left).

    python bench/bench_base.py [--run runs/base/run7]

Writes bench/results/base.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import bench_voxid, speech_files
from common import RESULTS, quick, write_result

REPO = Path(__file__).resolve().parents[1]


def training_row(run: Path, classes: int | None) -> dict | None:
    """Epochs, time and throughput of the training run, where it is on disk."""
    path = run / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    return {
        "model": "base (training)",
        "epochs": m.get("epochs_run"),
        "best_epoch": m.get("best_epoch"),
        "train_minutes": round(m.get("train_seconds", 0) / 60, 1),
        "train_items_per_epoch": m.get("train_items_per_epoch"),
        "train_x_realtime": m.get("train_realtime_factor"),
        "heldout_eer": (m.get("heldout") or {}).get("eer"),
        "classes": classes,
    }


def kept_training_row(classes: int | None) -> dict | None:
    """The training row of the last result, with the date it was measured, when the run is
    no longer on disk: shipping the same encoder again (a new back-end, `ship_base.py
    base.pt`) keeps its training record. None when no earlier row matches its classes."""
    path = RESULTS / "base.json"
    if not path.is_file():
        return None
    last = json.loads(path.read_text())
    for row in last.get("rows", []):
        if row.get("model") == "base (training)" and row.get("classes") == classes:
            return {**row, "training_measured": row.get("training_measured", last["date"])}
    return None


def main() -> int:
    """Measure the shipped files and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        type=Path,
        default=REPO / "runs" / "base" / "run7",
        help="the training run of the shipped model (make base-model's stage 7)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    from voxid.checkpoint import load_checkpoint
    from voxid.models.base import count_parameters
    from voxid.pretrained import resolve

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips, longs, three = speech_files(Path(tmp))
        for kind in ("onnx", "pt"):
            path = resolve("base", kind)
            row = bench_voxid(path, clips, longs, three, Path(tmp), 2 if quick() else 5)
            row.update(model=f"base ({kind})", size_mb=round(path.stat().st_size / 2**20, 2))
            rows.append(row)
            print(row, flush=True)
    meta, model = load_checkpoint("base")
    rows[0]["parameters_m"] = round(count_parameters(model) / 1e6, 2)
    # The card is a ModelCard, not a dict: its `base` attribute holds the training summary.
    classes = (getattr(meta, "base", None) or {}).get("trained_speakers")
    train = training_row(args.run, classes) or kept_training_row(classes)
    if train is not None:
        rows.append(train)
    shortest = meta.audio.min_input_seconds if meta.audio else None
    repeat_note = (
        f" x_rt_1s_files embeds each 1-s clip's speech repeated to {shortest:g} s in one pass, "
        f"as the recogniser does for this model (audio_config.chunk.min_input_seconds), so "
        f"{shortest:g} times the network's work of a 1-s input."
        if shortest
        else ""
    )
    write_result(
        "base",
        "The shipped base model: size, speed, latency, training",
        rows,
        notes=(
            "Speed figures as in the embedding-speed table (bench_embed.py, same clips): "
            "x_rt_1s_batched_model is 64 one-second clips per call through the model alone, "
            "x_rt_1s_files end to end from files, verify_3s the latency of one verify of a "
            "3-s file. The training row comes from the run of make base-model's stage 7, "
            "the shipped model (runs/base/run7/metrics.json; it trains on from stage 6, 3 "
            "epochs in 33 min, itself from stage 5, 3 epochs in 31 min, stage 4, 4 epochs in "
            "30 min, stage 3, 5 epochs in "
            "72 min, stage 2, 7 epochs in 70 min, and stage 1, 10 epochs in 77 min, see the "
            "model card): "
            "epochs, wall minutes on the 2-core CPU, "
            "training clips per epoch (17 warps of every clip), classes, and the held-out "
            "speakers' EER of the epoch kept (best_epoch counts from 0); training_measured, "
            "where set: the run is no longer on disk and the row is the one measured then "
            "(the same encoder, shipped again with another back-end). parameters_m: the "
            "encoder's weights (the shipped head has no classes)." + repeat_note
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
