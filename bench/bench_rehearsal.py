"""P-C with the base encoder fine-tuned by rehearsal: its own voices plus P-C's allowed ones.

    python bench/bench_rehearsal.py --data ../shared/data [--work bench/work/rehearsal]
                                    [--epochs 2] [--lr 5e-4]

P-C lets a model train on every speaker but asc30 00000021-00000030. Fine-tuning the base
encoder on those speakers alone (`voxid train finetune`, BENCHMARKS.md P-C) forgets what
532 voices taught it: 13.9 % against 9.8 % zero-shot. Here the base recipe's last stage is
run once more with asc30 00000001-00000020 added to its voices (rehearsal: the new voices
are learnt beside the old ones, not instead of them), through the project's own commands:

1. `voxid prepare` of librispeech-100, speechcommands, cv-fa and asc30 without P-C's test
   speakers, at the nine warps of the base recipe's stage 3 (each warp a new speaker),
   40 random speakers held out for choosing the epoch by EER;
2. `voxid teacher`: Resemblyzer's embedding of every clip (distillation, as the base);
3. `voxid train base ... init=runs/base/run3`: from stage 3 (or any `--init`), distilled,
   real noise and narrowband clips as the base recipe, `--epochs` at `--lr`;
4. `scripts/ship_base.py --out WORK/ship`: the encoder with an LDA and AS-norm cohort fitted
   on its training speakers (asc30 00000001-00000020 among them, as P-C allows), short
   speech at 2 s, a threshold calibrated on the held-out speakers;
5. P-C's 4,000 trials scored through the recogniser exactly as P-Z scores them
   (`bench_zeroshot`), beside the shipped base model in the same run.

Every step is kept in WORK and skipped when its output exists, so an interrupted run resumes
(training from last.ckpt). Takes about 40 minutes on the 2-core CPU; a smoke run
(BENCH_QUICK=1) skips it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from bench_zeroshot import embed_voxid, score_set, zero_shot_sets  # noqa: E402
from common import quick, write_result  # noqa: E402

VOXID = str(Path(sys.executable).with_name("voxid"))
WARPS = "speed_0.85,speed_0.9,speed_1.1,speed_1.15,vtlp_0.85,vtlp_0.9,vtlp_1.1,vtlp_1.15"
PC_TEST = "00000021-00000030"
SET = "asc30 21-30 (P-C trials)"


def _run(cmd: list[str], log: Path) -> None:
    """Run one step, its output in `log`; stop with the log's tail when it fails."""
    print("+", " ".join(cmd), flush=True)
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc:
        tail = log.read_text().strip().splitlines()[-5:]
        raise SystemExit(f"bench_rehearsal: step failed (rc {rc}), {log}:\n" + "\n".join(tail))


def build(data: Path, work: Path, init: str, epochs: int, lr: float) -> Path:
    """Steps 1-4 (each skipped when done); the shipped-style model file."""
    work.mkdir(parents=True, exist_ok=True)
    store, run, ship = work / "store.h5", work / "run", work / "ship"
    if not store.is_file():
        corpora = [str(data / c) for c in ("librispeech-100", "speechcommands", "cv-fa", "asc30")]
        _run([VOXID, "prepare", *corpora, "-o", str(store), "--features", "waveform",
              "--chunk", "1.0", "--tail", "keep", "--min-tail", "0.3", "--split", "0.95,0.05,0",
              "--heldout-speakers", "40", "--exclude-speakers", PC_TEST,
              "--speaker-augment", WARPS, "--workers", "2"], work / "prepare.log")  # fmt: skip
    targets = Path(f"{store}.resemblyzer.npz")
    if not targets.is_file():
        _run([VOXID, "teacher", str(store)], work / "teacher.log")
    if not (run / "metrics.json").is_file():
        resume = ["--resume"] if (run / "last.ckpt").is_file() else []
        _run([VOXID, "train", "base", "--data", str(store), "-o", str(run), "-q", *resume,
              f"init={init}", f"distill_targets={targets}", "distill_weight=10",
              f"epochs={epochs}", f"lr={lr}", f"augment.real_noise_dir={data / 'noise'}",
              "augment.narrowband_prob=0.3"], work / "train.log")  # fmt: skip
    if not (ship / "base.pt").is_file():
        ship.mkdir(exist_ok=True)
        _run([sys.executable, str(ROOT / "scripts" / "ship_base.py"), str(run), "--data",
              str(store), "--lda", "--min-input-seconds", "2", "--out", str(ship)],
             work / "ship.log")  # fmt: skip
    return ship / "base.pt"


def main() -> int:
    """Build the rehearsal model (resumably) and score P-C's trials; write pc_rehearsal.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=BENCH / "work" / "rehearsal")
    parser.add_argument("--init", default="runs/base/run3", help="the run to start from")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5.0e-4)
    args = parser.parse_args()
    if quick():
        print("bench_rehearsal: about 40 minutes of training; skipped in a smoke run")
        return 0
    missing = [c for c in ("librispeech-100", "speechcommands", "cv-fa", "asc30", "noise")
               if not (args.data / c).is_dir()]  # fmt: skip
    if missing:
        print(f"bench_rehearsal: {args.data} lacks {', '.join(missing)}; skipped")
        return 0
    model = build(args.data, args.work, args.init, args.epochs, args.lr)
    metrics = json.loads((args.work / "run" / "metrics.json").read_text())
    rows = zero_shot_sets(args.data)[SET]
    paths = [r["path"] for r in rows]
    out = []
    models = [
        ("voxid base, zero-shot (shipped)", "base"),
        ("voxid base + rehearsal on P-C's training voices", str(model)),
    ]
    for label, spec in models:
        start = time.perf_counter()
        emb, cohort, whole = embed_voxid(spec, paths)
        row = {"model": label, **score_set(emb, rows, cohort), "files_embedded_whole": whole,
               "embed_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        print(label, f"EER {row['eer']:.3f}", flush=True)
        out.append(row)
    out[-1].update(
        epochs=metrics.get("epochs_run"),
        best_epoch=metrics.get("best_epoch"),
        train_minutes=round(metrics.get("train_seconds", 0) / 60, 1),
        train_items_per_epoch=metrics.get("train_items_per_epoch"),
        heldout_eer=round(metrics.get("heldout", {}).get("eer", float("nan")), 4),
    )
    write_result(
        "pc_rehearsal",
        "P-C: the base encoder fine-tuned with rehearsal (its voices plus asc30 00000001-20)",
        out,
        notes=(
            "P-C's 4,000 trials (asc30 00000021-00000030: enrol takes 01-03, test take 04), "
            "scored through the recogniser as P-Z scores them (its VAD, chunks, LDA and "
            "AS-norm cohort). The fine-tuned model: the base recipe's stage 3 run once more "
            "from stage 3 with asc30 00000001-00000020 added to its 532 voices, all at nine "
            "warps (96,099 clips in the store, 94,992 trained on; 512 voices before warping), "
            "distilled from Resemblyzer, its "
            "LDA and cohort refitted on its training speakers (steps in the script's "
            "docstring). heldout_eer: the 40 random speakers held out of this store (not the "
            "base store's 40: some of those were trained on here, so it is not comparable "
            "with the base model's 8.4 %). Fine-tuning on P-C's training speakers alone "
            "(`voxid train finetune`, the P-C table) reaches 13.9 %."
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
