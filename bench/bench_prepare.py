"""Data preparation throughput: x real time on asc30 with 2 worker processes.

The whole of `voxid prepare` is timed: decode (FLAC), VAD, chunking, log-mel features,
and writing the HDF5 store, over all 4,800 one-second clips (BENCH_QUICK=1: 800 clips).
Writes bench/results/prepare.json.

    .venv/bin/python bench/bench_prepare.py [--runs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import quick, write_result

DATA = Path(
    os.environ.get("VOXID_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
TARGET = 300.0


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # pool workers, once reaped
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    """Run the benchmark and write its result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare

    if not (DATA / "asc30" / "manifest.csv").exists():
        sys.exit(f"{DATA / 'asc30'}: shared data not present")
    corpus = assign_splits(load_corpus(DATA / "asc30"), rule="take:01,02,03=train;04=test")
    if quick():
        corpus = corpus.with_items(corpus.items[::6])
    rows = []
    with tempfile.TemporaryDirectory(prefix="voxid-bench-") as tmp:
        for run in range(args.runs):
            cpu0 = _cpu_seconds()
            rep = prepare(
                corpus, Path(tmp) / f"asc30-{run}.h5", PrepareConfig(), workers=args.workers
            )
            # CPU time of this process and its workers: a figure a busy machine does not
            # distort, unlike wall time
            cpu = _cpu_seconds() - cpu0
            print(
                f"run {run + 1}: {rep.files_used} files, {rep.seconds:.0f} s audio in "
                f"{rep.elapsed:.2f} s = {rep.realtime_factor:.0f}x real time "
                f"({cpu:.1f} CPU s, {rep.seconds / cpu:.0f}x real time per core)",
                flush=True,
            )
            rows.append(
                {
                    "run": run + 1,
                    "files": rep.files_used,
                    "items": rep.items,
                    "audio_s": round(rep.seconds, 1),
                    "wall_s": round(rep.elapsed, 3),
                    "x_realtime": round(rep.realtime_factor, 1),
                    "cpu_s": round(cpu, 2),
                    "x_realtime_per_core": round(rep.seconds / cpu, 1),
                }
            )
    median = statistics.median(r["x_realtime"] for r in rows)
    rows.append(
        {
            "run": "median",
            "files": rows[0]["files"],
            "items": rows[0]["items"],
            "audio_s": rows[0]["audio_s"],
            "wall_s": round(statistics.median(r["wall_s"] for r in rows), 3),
            "x_realtime": median,
            "cpu_s": round(statistics.median(r["cpu_s"] for r in rows), 2),
            "x_realtime_per_core": statistics.median(r["x_realtime_per_core"] for r in rows),
        }
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    notes = (
        f"asc30, {args.workers} worker processes, log-mel 64 (16 kHz), VAD on, 1 s "
        f"chunks; median of {args.runs} runs; target {TARGET:.0f}x; "
        f"1-min load average at the end {load:.1f}. x_realtime_per_core = audio seconds per "
        "CPU second of the parent and its workers, which a busy machine does not distort"
    )
    out = write_result("prepare", "Data preparation throughput (x real time)", rows, notes=notes)
    print(f"median {median:.0f}x real time (target {TARGET:.0f}x) -> {out}")


if __name__ == "__main__":
    main()
