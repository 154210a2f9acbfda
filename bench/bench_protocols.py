"""Protocols P-A, P-B and P-C of ../shared/data/README.md, every model through the same CLI.

    python bench/bench_protocols.py --data ../shared/data [--protocols pa,pb,pc]
        [--models crnn,ecapa,ecapa_small,seed_cnn,gmm] [--auth-scoring speakers,binary]
        [--minutes 20] [--vad] [--lda] [--epochs N]

A "model" is a recipe name (`configs/<name>.yaml`): `finetune` fine-tunes the shipped base
encoder (`init: base`) on the protocol's training speakers; `ecapa_small` is ECAPA-TDNN at 256
channels. Each protocol is a handful of `voxid prepare / train / evaluate` commands (printed,
and quoted in BENCHMARKS.md), so a user can run the very same thing by hand. Results go to
bench/results/pa.json, pb.json and pc.json, one row per model (rows of models not run this
time are kept, with the date they were measured); runs and stores to bench/work/ (ignored by
git). BENCH_QUICK=1 trains crnn for half a minute per protocol, for a smoke run; its stores,
runs and results stay under bench/work/quick/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from common import QUICK_DIR, RESULTS, quick, write_result

ROOT = Path(__file__).resolve().parents[1]
#: Stores and runs; a smoke run keeps its own, so it never replaces a measured run.
WORK = QUICK_DIR if quick() else ROOT / "bench" / "work"
VOXID = [sys.executable, "-m", "voxid"]
FEATURES = {"crnn": "logmel", "crnn_mn": "logmel", "ecapa": "fbank", "ecapa_small": "fbank",
            "ecapa_small_lvl": "fbank", "ecapa_small_vtlp": "fbank", "resnet34": "fbank",
            "seed_cnn": "image", "gmm": "mfcc", "finetune": "fbank",
            "finetune_all": "fbank", "finetune_gentle": "fbank",
            "finetune_warps": "fbank", "finetune_imprint": "fbank",
            "finetune_soup": "fbank", "finetune_wise": "fbank"}  # fmt: skip
#: Bench models that are a recipe with overrides: `crnn_mn` is the CNN-RNN with per-band mean
#: normalisation of its log-mel input (not in the paper); `finetune_all` fine-tunes the base
#: encoder with no frozen epoch and the encoder at the head's learning rate (the `finetune`
#: recipe's defaults since 2026-12-02), `finetune_gentle` with the encoder frozen for the
#: first epoch and then at a tenth of the head's rate; `finetune_imprint` starts the new head
#: from the base encoder's class means (`head_init: imprint`) and `finetune_soup` is the mean
#: of two such runs' weights (seeds 0 and 1, `soup: 2`); `finetune_wise` is finetune_imprint
#: with its encoder moved back halfway to the base's weights when training ends (`wise: 0.5`).
VARIANTS = {
    "crnn_mn": ("crnn", ["model.mean_norm=true"]),
    "ecapa_small_lvl": ("ecapa_small", ["features.norm=level"]),
    "ecapa_small_vtlp": ("ecapa_small", []),
    "finetune_all": ("finetune", ["encoder_lr_scale=1", "freeze_encoder_epochs=0"]),
    "finetune_gentle": ("finetune", ["encoder_lr_scale=0.1", "freeze_encoder_epochs=1"]),
    "finetune_warps": ("finetune", ["encoder_lr_scale=1", "freeze_encoder_epochs=0"]),
    "finetune_imprint": ("finetune", ["head_init=imprint"]),
    "finetune_soup": ("finetune", ["head_init=imprint", "soup=2"]),
    "finetune_wise": ("finetune", ["head_init=imprint", "wise=0.5"]),
}
#: Bench models trained from a store with offline-augmented copies of the training clips
#: (`voxid prepare --augment`): `ecapa_small_vtlp` adds one vocal-tract-length-perturbed
#: copy of each (warp 0.9-1.1), as the CNN-RNN report augments.
STORE_AUGMENT = {"ecapa_small_vtlp": "vtlp"}
#: Bench models trained from a store with speaker-augmented copies (`voxid prepare
#: --speaker-augment`: each warped copy of a training speaker a class of its own, as the
#: base recipe trains): `finetune_warps` is finetune_all with every training speaker also
#: at speed 0.9 and 1.1, pseudo-voices that `voxid evaluate` leaves out of P-A's closed set
#: and that P-B counts as outsiders (no warped copy is a member).
STORE_SPEAKER_AUGMENT = {"finetune_warps": "speed_0.9,speed_1.1"}
#: Epochs per model that fit the time cap on 2 cores, so the cosine schedule anneals fully
#: (a run cut short by max_minutes would stop at a high learning rate).
EPOCHS = {
    "crnn": 12,
    "crnn_mn": 12,
    "ecapa": 6,
    "ecapa_small": 18,
    "ecapa_small_lvl": 18,
    "ecapa_small_vtlp": 12,
    "resnet34": 4,
    "seed_cnn": 15,
    "finetune": 10,
    "finetune_all": 10,
    "finetune_gentle": 10,
    "finetune_warps": 10,
    "finetune_imprint": 10,
    "finetune_soup": 10,
    "finetune_wise": 10,
}
EPOCHS_PC = {
    "crnn": 5,
    "ecapa": 3,
    "ecapa_small": 6,
    "resnet34": 2,
    "finetune": 6,
    "finetune_all": 6,
}
#: Models trained from waveform stores with background-noise recordings mixed in on the fly:
#: the asc30 takes of a speaker differ in background noise, which a model otherwise learns
#: as part of the voice (P-A's errors on take 04 followed the noise floor).
NOISY_TRAINING = {
    "ecapa_small",
    "ecapa_small_lvl",
    "ecapa_small_vtlp",
    "crnn_mn",
    "finetune",
    "finetune_all",
    "finetune_warps",
    "finetune_imprint",
    "finetune_soup",
    "finetune_wise",
}
MEMBERS = "00000001-00000005"
UNSEEN = "00000021-00000030"
SPLIT_PA = "take:01,02,03=train;04=test"
#: Set by --vad: every store keeps only speech (energy VAD) in variable-length chunks, as
#: the recogniser embeds audio, instead of whole 1-s clips with their silences.
VAD = False
#: Set by --lda: P-C also scores each run with an LDA projection fitted on its training
#: speakers (`voxid fit-lda`), one more row.
LDA = False
#: Set by --minutes: each training's time budget. Issue #3 caps P-A and P-B at 20 minutes;
#: P-C sets no cap, so its models may also be measured with a longer one (a run and row of
#: their own).
DEFAULT_MINUTES = 20.0
MINUTES = DEFAULT_MINUTES
#: Set by --epochs: every model trains this many epochs, and its rows say so.
FIXED_EPOCHS: int | None = None
#: Models P-B and P-C do not train: the GMM baseline and Resemblyzer verify as peers
#: (bench/peers.py), and seed_cnn is a pure classifier with no embedding to verify with.
NOT_TRAINED_HERE = ("gmm", "seed_cnn", peers.PEER)
#: The P-C training corpora; --vad leaves out fsdd (6 speakers, 3,000 digits at 8 kHz), a
#: third of each epoch spent on six voices.
PC_CORPORA = ("librispeech-100", "fsdd", "voxforge", "asc30")
PC_CORPORA_VAD = ("librispeech-100", "voxforge", "asc30")


def voxid(*args: str, log: Path | None = None) -> tuple[float, str]:
    """Run one voxid command, echo it, return (seconds, stdout); raise on failure."""
    cmd = [*VOXID, *args]
    print("$ voxid " + " ".join(shlex.quote(a) for a in args), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f"voxid {args[0]} failed with exit {proc.returncode}")
    return elapsed, proc.stdout


def clip_chunking(min_tail: float = 0.1) -> list[str]:
    """`voxid prepare` options for 1-s clips: whole, or (--vad) their speech alone."""
    if VAD:
        return ["--chunk", "1.0", "--tail", "keep", "--min-tail", str(min_tail)]
    return ["--no-vad", "--chunk", "1.0"]


def tag(name: str) -> str:
    """A store or run name, marked when --vad changes how it was made."""
    return f"{name}_vad" if VAD else name


def run_tag(name: str) -> str:
    """A run name: as `tag`, and marked when --minutes changes the training budget."""
    return tag(name) + ("" if MINUTES == DEFAULT_MINUTES else f"_{MINUTES:g}min")


def prepare(name: str, sources: list[Path], features: str, *extra: str) -> Path:
    """Prepare (once) a store bench/work/<name>_<features>.h5."""
    out = WORK / f"{tag(name)}_{features}.h5"
    if not out.exists():
        voxid(
            "prepare",
            *map(str, sources),
            "-o",
            str(out),
            "--features",
            features,
            "--workers",
            "2",
            *extra,
        )
    return out


def train(
    run: str, model: str, store: Path, minutes: float, *overrides: str, epochs: int | None = None
) -> dict:
    """Train (unless the same command already finished this run) and return its metrics.json.

    A finished run is reused only when `bench_command.json` in its folder records the very
    same train command, so changing a recipe's overrides here retrains.
    """
    out = WORK / "runs" / run
    extra = (
        ["epochs=1", "max_minutes=0.5"]
        if quick()
        else [f"max_minutes={minutes}"] + ([f"epochs={epochs}"] if epochs else [])
    )
    recipe, variant = VARIANTS.get(model, (model, []))
    args = ["train", recipe, "--data", str(store), "-o", str(out), "-q", *extra, *variant,
            *overrides]  # fmt: skip
    stamp = out / "bench_command.json"
    done = (out / "metrics.json").exists() and stamp.exists()
    if not done or json.loads(stamp.read_text()) != args:
        if out.exists():
            import shutil

            shutil.rmtree(out)
        voxid(*args, log=WORK / "logs" / f"{run}.log")
        stamp.write_text(json.dumps(args))
    return json.loads((out / "metrics.json").read_text())


def store_kind(model: str) -> str:
    """The kind of store a model trains from: waveforms for noisy training, else features."""
    return "waveform" if model in NOISY_TRAINING else FEATURES[model]


def noise_overrides(model: str, data: Path) -> list[str]:
    """Training overrides that mix `data/noise` recordings into a share of the clips."""
    if model not in NOISY_TRAINING or not (data / "noise").is_dir():
        return []
    return [f"augment.real_noise_dir={data / 'noise'}", "augment.real_noise_prob=0.5"]


def evaluate(run: str, store: Path, *extra: str) -> dict:
    """Evaluate a run and return its report.json."""
    out = WORK / "reports" / run
    voxid("evaluate", str(WORK / "runs" / run), "--data", str(store), "-o", str(out), *extra)
    return json.loads((out / "report.json").read_text())


def _find(tree: object, key: str) -> object:
    """The first value of `key` anywhere in a nested report (trial counts live deep)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for value in tree:
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _speed(metrics: dict) -> dict:
    seconds = metrics.get("train_seconds") or 0.0
    return {
        "train_min": round(seconds / 60, 1),
        "epochs": metrics.get("epochs_run"),
        "clips_per_s": metrics.get("train_items_per_second"),
        "x_real_time": metrics.get("train_realtime_factor"),
    }


def peer_row(protocol: str, data: Path) -> dict | None:
    """Resemblyzer's row for a protocol (its embeddings computed once), or None without it."""
    if not peers.available():
        print(f"[bench] {peers.PEER} is not installed (make bench installs it): no peer row")
        return None
    emb = peers.embeddings(data, WORK / f"peer_{peers.PEER}_asc30.npz")
    return {"pa": peers.pa_row, "pb": peers.pb_row, "pc": peers.pc_row}[protocol](*emb)


def protocol_pa(data: Path, models: list[str], minutes: float) -> None:
    """P-A: closed-set identification, train on takes 01-03, test on take 04 (1,200 clips)."""
    rows = []
    for model in models:
        if model == peers.PEER:
            rows += filter(None, [peer_row("pa", data)])
            continue
        feats = store_kind(model)
        chunking = ["--no-chunk"] if feats == "image" else clip_chunking()
        offline = STORE_AUGMENT.get(model)
        warps = STORE_SPEAKER_AUGMENT.get(model)
        store = prepare(
            "pa" + (f"_{offline}" if offline else "") + ("_warps" if warps else ""),
            [data / "asc30"],
            feats,
            "--split-rule",
            SPLIT_PA,
            "--val-from-train",
            "0.1",
            *chunking,
            *([] if offline is None else ["--augment", offline]),
            *([] if warps is None else ["--speaker-augment", warps]),
        )
        run = run_tag(f"pa_{model}")
        metrics = train(
            run, model, store, minutes, *noise_overrides(model, data), epochs=EPOCHS.get(model)
        )
        summ = evaluate(run, store, "--split", "test")["summary"]
        rows.append(
            {
                "model": label(model),
                "top1": summ.get("top1_accuracy"),
                "top5": summ.get("top5_accuracy"),
                "macro_f1": summ.get("macro_f1"),
                **_speed(metrics),
            }
        )
    references = [
        {"model": "reference: MFCC + GMM (issue)", "top1": 0.908},
        {"model": "reference: Resemblyzer nearest centroid (issue)", "top1": 0.859},
    ]
    write_result(
        "pa",
        "P-A: closed-set identification, asc30 (30 speakers, test on take 04)",
        merge_rows("pa", rows, references),
        notes=_notes("pa"),
    )


def auth_cohorts(data: Path) -> dict[str, Path]:
    """P-B's AS-norm cohort stores (made once), by the label suffix of their rows: Speech
    Commands' 4,482 one-second clips (239 voices outside asc30), and the seen outsiders'
    training clips (takes 01-03 of 00000006-00000020: trained on, and neither a member nor
    a never-seen outsider); stored as P-B's clips are (`clip_chunking`)."""
    cohorts = {
        ": seen outsiders": prepare(
            "cohort_seen", [data / "asc30"], "waveform", "--speakers", "00000006-00000020",
            "--split-rule", "take:01,02,03=train", *clip_chunking(),
        ),
    }  # fmt: skip
    if (data / "speechcommands").is_dir():
        cohorts[": speechcommands"] = prepare(
            "cohort_sc", [data / "speechcommands"], "waveform", "--split", "1,0,0",
            *clip_chunking(),
        )  # fmt: skip
    return cohorts


def protocol_pb(
    data: Path, models: list[str], minutes: float, scorings: tuple[str, ...] = ("speakers",)
) -> None:
    """P-B: authentication; members 01-05, seen outsiders 06-20, unseen outsiders 21-30.

    `scorings`: `binary` is the CNN-RNN paper's member/outsider head; `speakers` trains
    N-way over the 20 training speakers and scores the best cosine to a member's weight.
    """
    rows = []
    runs = [(m, s) for m in models if m not in NOT_TRAINED_HERE for s in scorings]
    if peers.PEER in models:
        rows += filter(None, [peer_row("pb", data)])
    if "gmm" in models:  # the baseline verifies by cohort-normalised likelihoods (peers.py)
        rows.append(peers.gmm_pb_row(*peers.mfcc_features(data)))
    for model, scoring in runs:
        feats = store_kind(model)
        warps = STORE_SPEAKER_AUGMENT.get(model)
        store = prepare(
            "pb_warps" if warps else "pb",
            [data / "asc30"],
            feats,
            "--split-rule",
            SPLIT_PA,
            "--val-from-train",
            "0.1",
            "--unseen-speakers",
            UNSEEN,
            *clip_chunking(),
            *([] if warps is None else ["--speaker-augment", warps]),
        )
        # Quoted: the override is YAML, where 00000001 would be read as the integer 1.
        members = ",".join(f"'{i:08d}'" for i in range(1, 6))
        run = run_tag(f"pb_{model}" if scoring == "binary" else f"pb_{model}_{scoring}")
        metrics = train(
            run,
            model,
            store,
            minutes,
            "mode=authenticate",
            f"members=[{members}]",
            f"auth_scoring={scoring}",
            *noise_overrides(model, data),
            epochs=EPOCHS.get(model),
        )
        # A report with a cohort holds the plain figures too: one evaluation per cohort.
        cohorts = auth_cohorts(data) if scoring == "speakers" else {}
        normed = {
            name: evaluate(run, store, "--split", "test", "--cohort", str(path))["summary"]
            for name, path in cohorts.items()
        }
        summ = (
            next(iter(normed.values()))
            if normed
            else evaluate(run, store, "--split", "test")["summary"]
        )
        keys = ("eer", "far", "far_seen", "far_unseen", "frr", "accuracy",
                "far_unseen_at_frr_0.02")  # fmt: skip
        rows.append(
            {
                "model": f"{label(model)} ({scoring})",
                **{k: summ.get(k) for k in keys},
                "threshold": metrics.get("threshold"),
                **_speed(metrics),
            }
        )
        for name, figures in normed.items():
            rows.append(
                {
                    "model": f"{label(model)} ({scoring}, AS-norm{name})",
                    "eer": figures["asnorm_eer"],
                    "far_unseen_at_frr_0.02": figures["asnorm_far_unseen_at_frr_0.02"],
                    **_speed(metrics),
                }
            )
    references = [
        {
            "model": "reference: CNN-RNN paper (all outsiders seen)",
            "eer": 0.038,
            "far": 0.002,
            "frr": 0.074,
        }
    ]
    write_result(
        "pb",
        "P-B: authentication, asc30 (members 01-05; outsiders seen 06-20, never seen 21-30)",
        merge_rows("pb", rows, references),
        notes=_notes("pb"),
    )


def protocol_pc(data: Path, models: list[str], minutes: float) -> None:
    """P-C: verification of the 10 asc30 speakers never seen in training (4,000 trials)."""
    rows = []
    if peers.PEER in models:
        rows += filter(None, [peer_row("pc", data)])
    if "gmm" in models:
        rows.append(peers.gmm_pc_row(*peers.mfcc_features(data)))
    for model in [m for m in models if m not in NOT_TRAINED_HERE]:
        feats = FEATURES[model]
        train_store = prepare(
            "pc_train",
            [data / d for d in (PC_CORPORA_VAD if VAD else PC_CORPORA)],
            store_kind(model),
            "--exclude-speakers",
            UNSEEN,
            "--split",
            "0.9,0.1,0",
            *(["--tail", "keep", "--min-tail", "0.3"] if VAD else []),
        )
        eval_store = prepare(
            "pc_eval",
            [data / "asc30"],
            feats,
            "--speakers",
            UNSEEN,
            "--split-rule",
            "take:01,02,03=enroll;04=test",
            *clip_chunking(),
        )
        run = run_tag(f"pc_{model}")
        metrics = train(
            run,
            model,
            train_store,
            minutes,
            *noise_overrides(model, data),
            epochs=EPOCHS_PC.get(model),
        )
        runs = [(run, label(model))]
        if LDA:
            runs.append((with_lda(run, train_store), label(model) + " +lda"))
        for name, row_label in runs:
            # AS-norm against the held-out tenth of the training speakers' clips, a cohort
            # that P-C allows (no clip of the ten test speakers); a run after fit-lda
            # carries its own cohort (the training speakers' means), which the recogniser
            # uses, so its row shows the recogniser's scores.
            cohort = [] if name.endswith("_lda") else ["--cohort", str(train_store),
                                                       "--cohort-split", "val"]  # fmt: skip
            report = evaluate(
                name,
                eval_store,
                "--verify",
                "--enroll-split",
                "enroll",
                "--test-split",
                "test",
                *cohort,
            )
            summ = report["summary"]
            trials = (_find(report, "n_target") or 0) + (_find(report, "n_nontarget") or 0)
            rows.append(
                {
                    "model": row_label,
                    "eer": summ.get("eer"),
                    "min_dcf_0.01": summ.get("min_dcf_0.01"),
                    "asnorm_eer": summ.get("asnorm_eer"),
                    "asnorm_min_dcf_0.01": summ.get("asnorm_min_dcf_0.01"),
                    "trials": trials,
                    "targets": _find(report, "n_target"),
                    **_speed(metrics),
                }
            )
    references = [
        {"model": "reference: Resemblyzer pretrained (issue)", "eer": 0.133},
        {"model": "reference: MFCC + GMM, cohort-normalised (issue)", "eer": 0.098},
    ]
    write_result(
        "pc",
        "P-C: verification of speakers never seen in training (asc30 21-30)",
        merge_rows("pc", rows, references),
        notes=_notes("pc"),
    )


def with_lda(run: str, train_store: Path) -> str:
    """A copy of a finished run with an LDA projection fitted on its training split."""
    import shutil

    name = f"{run}_lda"
    out = WORK / "runs" / name
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(WORK / "runs" / run, out)
    # --cohort: the run's asnorm figures are then the recogniser's own AS-normed scores.
    voxid("fit-lda", str(out), "--data", str(train_store), "--cohort",
          log=WORK / "logs" / f"{name}.log")  # fmt: skip
    return name


def label(model: str) -> str:
    """A model's row name: `+vad` where its stores kept speech only, and a training budget
    other than the default (`--epochs` too: rows are replaced by name, so a run of other
    epochs must not take the place of one it does not repeat)."""
    name = f"{model} +vad" if VAD else model
    budget = [f"{FIXED_EPOCHS} epochs"] if FIXED_EPOCHS else []
    budget += [f"{MINUTES:g} min"] if MINUTES != DEFAULT_MINUTES else []
    return f"{name} ({', '.join(budget)})" if budget else name


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def merge_rows(name: str, rows: list[dict], references: list[dict]) -> list[dict]:
    """This run's rows, then the earlier rows of models not run this time, then references.

    A model's earlier row keeps the date it was measured (`measured`), so one table can
    gather models trained in separate sessions without passing them off as one run.
    """
    now = _now()
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    fresh = [{**row, "measured": now, "_command": command} for row in rows]
    seen = {row["model"] for row in fresh}
    old = RESULTS / f"{name}.json"
    kept = []
    if old.is_file() and not quick():
        payload = json.loads(old.read_text())
        for row in payload.get("rows", []):
            model = str(row.get("model", ""))
            if model in seen or model.startswith("reference:"):
                continue
            kept.append({**row, "measured": row.get("measured") or payload.get("date")})
    return fresh + kept + references


#: What each table needs said beside its numbers.
FINDINGS = {
    "pa": (
        "ecapa_small and crnn_mn train from waveform stores with the two background-noise "
        "recordings of ../shared/data/noise mixed into half the clips (5-30 dB): the test "
        "take of some speakers has another noise floor (00000004: -47 dB against -69 dB in "
        "takes 01-03), and without the noise a model names whoever's recordings had that "
        "background (ecapa_small on fbank stores: 95.5 %; those speakers are right now). "
        "Validation, carved from takes 01-03, reaches 99 % or more for every network: the "
        "rest of the gap is the new take itself (00000015 is still half wrong). `+vad`: "
        "stores of the clips' speech alone (0.72 s of each 1-s clip, median), as the "
        "recogniser embeds; it costs ecapa_small 3.5 points (92.5 %): the silences carry "
        "speaker cues too. crnn_mn (per-band mean normalisation plus the noise) learns "
        "far slower than the paper's crnn on these 3,240 clips (73.8 % against 81.2 %). "
        "seed_cnn (the mel-spectrogram CNN paper's network, 200x200 images at 22,050 Hz) "
        "reached 81.0 %, beside the paper's 82 % on 20 speakers; it stopped at the "
        "20-minute cap after 12 of its 15 epochs, and the test suite shared the CPU for "
        "about 5 of those minutes. ecapa_small_lvl is ecapa_small with `features.norm=level` "
        "(one mean per utterance taken out, the gain, instead of each mel band's, which "
        "also takes out the long-term spectrum): 93.8 % against 96.0 %, so the per-band "
        "normalisation helps across takes, and stays the default; 00000015's take 04 is "
        "named 00000012 in 22 of 40 clips, more than half of all errors. That take is "
        "ambiguous to an independent encoder too: Resemblyzer's pretrained one (nearest "
        "centroid of takes 01-03, 86.0 % in all) puts its clips at mean cosine 0.828 to "
        "00000015's centroid and 0.825 to 00000012's, where 00000015's takes 01-03 score "
        "0.85-0.88 against 0.74-0.77; so about 20 of the 24 errors that 98 % allows are "
        "spent on one take before any other speaker errs. Longer training does not help: "
        "ecapa_small with `--epochs 26` (23 run before the 20-minute cap, best at 18) "
        "reached 95.7 %; the ecapa_small row is the 18-epoch recipe. ecapa_small_vtlp "
        "(one VTLP copy of every training clip, as the CNN-RNN report augments; 12 epochs "
        "of twice the clips) reached 95.9 %: 00000015's take 04 rises to 25 of 40, and "
        "00000006 falls to 31."
    ),
    "pb": (
        "`(binary)`: the CNN-RNN paper's member/outsider head, score P(member). `(speakers)`: "
        "N-way AAM-softmax over the 20 training speakers, score = highest cosine to a "
        "member's class weight. Threshold: 1 % FAR on validation outsiders (all seen ones), "
        "which lets in far more never-seen outsiders; far_unseen_at_frr_0.02 reads the DET "
        "curve where 98 % of the members' clips pass. Twenty training speakers are too few "
        "for embeddings that keep strangers out: unseen 00000021-00000023 are accepted at "
        "most operating points. Other scores of the same crnn (speakers) run, measured on "
        "its test embeddings: member cosine minus the best seen-outsider cosine, or the "
        "head's member-vs-outsider log-odds, cut the EER from 9.9 % to 8.8-9.1 % and FAR "
        "of never-seen outsiders at 2 % FRR from 72 % to 58 %: not enough to change the "
        "picture, so the product keeps the plain cosine. ecapa_small (speakers) is now "
        "trained as in P-A, from a waveform store with the noise recordings mixed in: "
        "EER 6.7 %, early-stopped at epoch 14 (best 8); the earlier recipe (fbank store, no "
        "noise, 18 epochs; 2026-11-21) measured 4.3 % and 16.5 % never-seen FAR at 2 % FRR "
        "against 27.5 %. With 200 member clips (an EER near 5 % has a sampling error of "
        "about 1.5 points) one run of each cannot rank the recipes; neither is near 1 %. "
        "`(speakers, AS-norm: ...)`: the same run's member scores AS-normed (top 100, "
        "`voxid evaluate --cohort`) against a cohort of the seen outsiders' training clips "
        "(takes 01-03 of 00000006-00000020, 1,800 clips: trained on, and neither members "
        "nor never-seen outsiders) or of Speech Commands' 4,482 one-second clips (239 voices "
        "outside asc30): a never-seen outsider near a member is near many cohort voices "
        "too, so its normalised score falls. Only the threshold-free figures are given: the "
        "run's threshold was chosen for its plain cosines. The 16-epoch run (2026-12-06, "
        "early-stopped after 14): EER 2.6 -> 1.0 % (seen outsiders) or 1.3 % (Speech "
        "Commands), never-seen FAR at FRR 2 % 8.0 -> 1.75 % (7 of 400 clips) or 2.25 % "
        "(Speech Commands: the same with all three of the base recipe's corpora, 9,646 "
        "clips, and with top 50 or 300; the two cohorts together 1.3 %, 3.5 % on the "
        "24-epoch run). A 24-epoch budget (same day, early-stopped after 19, 4.7 min): "
        "2.4 -> 1.5 % and 7.75 -> 4.25 % with Speech Commands; with the seen outsiders "
        "(measured offline on that run's embeddings, before its folder was reused) 1.0 % "
        "and 2.5 %: between two runs the never-seen outsiders let in at FRR 2 % differ by "
        "3-8 clips, as much as the 2 % target is from either. The 16-epoch rows were "
        "measured again on 2026-12-07 from stage 4 of the base recipe (outer warps, shipped "
        "since; early-stopped after 14 again, 3.2 min): plain 2.6 -> 2.1 % and 8.0 -> "
        "6.25 %, AS-normed against the seen outsiders 1.0 -> 1.25 % and 1.75 -> 2.5 % (10 "
        "of 400 clips), against Speech Commands 1.3 -> 1.4 % and 2.25 -> 2.75 %: a better "
        "plain score, the AS-normed ones within the run-to-run spread above. From stage 5 "
        "(13 warps, shipped since 2026-12-07 morning; early-stopped after 14, 3.1 min): "
        "plain 2.1 -> 2.0 % and 6.25 -> 6.75 %, AS-normed against the seen outsiders "
        "1.25 -> 1.6 % and 2.5 -> 3.75 %, against Speech Commands 1.4 -> 1.8 % and 2.75 -> "
        "4.5 %: no better, again within the spread. finetune_warps (the same, with every "
        "training speaker also at speed 0.9 and 1.1 as pseudo-voices of its own, none of "
        "them a member; 16 epochs, 10.5 min), which lifts P-A to 98.6 %: 2.4 % and 7.0 %, "
        "AS-normed 1.5 % and 4.0 % (Speech Commands 2.6 %, 8.0 %): pseudo-outsiders near "
        "the members do not keep the never-seen ones out. The 16-epoch rows measured again "
        "from stage 6 (13 outer warps, shipped since 2026-12-07 afternoon): this run "
        "early-stopped after 9 epochs (best epoch 5 by val loss, 2.0 min) and gives plain "
        "3.9 % and 16.5 %, AS-normed against the seen outsiders 4.0 % and 17.0 %, against "
        "Speech Commands 3.25 % and 8.5 %; the same command with seed=1 (run by hand, "
        "early-stopped after 11, best epoch 7) gives plain 2.3 % and 7.5 %, AS-normed "
        "against the seen outsiders 1.3 % and 2.75 %; seed 0 with patience=8 (all 16 "
        "epochs, 4 min) 3.1 % and 10.5 %, AS-normed 2.4 % and 9.0 %. Between seeds the "
        "spread is wider than between stages; stage 6 is no better than stage 5 on P-B, "
        "and the never-seen FAR at FRR 2 % stays above its target on every run. From stage "
        "7 (17 warps, 0.7-1.4, shipped since; P-Z 7.9 % on P-C's trials), all 16 epochs "
        "(3.7 min): plain 3.1 % and 8.75 %, AS-normed against the seen outsiders 2.3 % and "
        "7.75 %, against Speech Commands 1.7 % and 3.75 % (15 of 400 clips): the EER "
        "target met with the Speech Commands cohort, the never-seen FAR not. The same command "
        "with seed=1 (by hand, early-stopped after 15, 3.3 min): plain 2.0 % and 5.75 %, "
        "AS-normed against the seen outsiders 1.3 % and 3.25 % (13 of 400 clips), against "
        "Speech Commands 1.6 % and 4.25 %. Three more tries from stage 7 (2026-12-07, late, "
        "by hand, seed 0): fine-tuned gently (encoder frozen for the first epoch, then at "
        "a tenth of the head's rate; 3.8 min) plain 6.65 % and 41.25 %, AS-normed against "
        "the seen outsiders 6.1 % and 33.0 %: the encoder must move for these voices. With "
        "Speech Commands' 239 voices added to the training store as outsiders (asc30 and "
        "Speech Commands prepared together, 6,178 training clips; 10.9 min) plain 7.5 % and "
        "25.75 %, AS-normed against the seen outsiders 3.2 % and 12.75 %: one-second "
        "strangers in training do not teach the members' edges. The two seeds' scores "
        "averaged (each standardised on its training clips; AS-normed against Speech "
        "Commands and the seen outsiders together): 1.2 % and 2.5 % (10 of 400 clips), "
        "against 1.6 / 3.75 % and 1.4 / 3.5 % for the seeds alone: the run-to-run spread "
        "is most of the gap left, but an ensemble doubles the cost of every embedding and "
        "voxid ships single models. finetune_imprint (2026-12-07, stage 7, 16 epochs, 3.7 "
        "min): the same fine-tuning with the new head started from the base encoder's mean "
        "embedding of each training speaker (`head_init=imprint`): plain 3.7 % and 10.5 %, "
        "AS-normed against the seen outsiders 1.7 % and 4.25 %, against Speech Commands "
        "3.4 % and 10.5 %. By hand with seeds 1 and 2 (seed 2 early-stopped after 14): "
        "plain 3.1 / 3.5 % and 8.25 / 13.0 %, AS-normed against the seen outsiders 0.8 / "
        "2.05 % and 0.5 / 6.25 %, against Speech Commands 2.5 / 3.4 % and 6.0 / 12.5 %; "
        "random heads with seeds 0, 1 and 2 (seed 2 by hand: early-stopped after 11) give, "
        "AS-normed against the seen outsiders, 2.3 / 1.3 / 2.9 % and 7.75 / 3.25 / 9.75 %. "
        "Imprinting lowers the never-seen FAR against the seen-outsider cohort on each of "
        "the three seeds (mean 6.9 -> 3.7 %), and raises it for plain scores (9.1 -> 10.6 "
        "%) and against Speech Commands (4.6 -> 9.7 %): an option, not the recipe's "
        "default. With the encoder at 0.3 of the head's rate (imprinted, seed 0) AS-normed "
        "2.85 % and 9.0 %: the encoder must move. finetune_soup: the mean of the weights of "
        "two imprinted runs, seeds 0 and 1 (`soup=2`, 7.1 min; one model's cost when "
        "embedding): plain 3.4 % and 9.75 %, AS-normed against the seen outsiders 0.9 % "
        "and 1.75 % (7 of 400 clips): both P-B targets, in the row and in "
        "`voxid evaluate`'s report, on this pair of seeds. Other soups of the same runs, "
        "by hand: seeds 1 and 2 1.4 % and 2.75 %, seeds 0 and 2 2.0 % and 6.25 %, all "
        "three 1.35 % and 2.5 %; two random-head runs (seeds 0 and 1) averaged 3.5 % and "
        "17.75 %: their heads point anywhere, so `soup` requires `head_init=imprint`. A "
        "soup lands near the mean of its members rather than above the best of them, so "
        "the targets are met on one pair of seeds out of three: steadier than one seed, "
        "not yet a margin. The never-seen voices let in are nearly always 00000021, "
        "00000022 and 00000027. finetune_wise (2026-12-08, stage 7, 16 epochs): "
        "finetune_imprint with its encoder moved back halfway to the base's weights when "
        "training ends (`wise=0.5`), which lowers P-C's EER on unseen voices (7.2 -> 6.0 %, "
        "the pc_finetune table): plain 6.6 % and 21.75 %, AS-normed against the seen "
        "outsiders 3.8 % and 12.75 %, against Speech Commands 6.1 % and 21.0 %. Members "
        "are scored by the head's class directions, learnt for the fine-tuned encoder, and "
        "the base's half of the weights blurs the members' edges: for P-B the encoder must "
        "move, as the gentle fine-tuning above found. Its 12.3 min against 3.7 min for "
        "finetune_imprint's same 16 epochs: this machine trained about three times slower "
        "that day (52 clips/s on P-C's fine-tuning as well)."
    ),
    "pc": (
        "asnorm_*: adaptive S-norm (top 100) against a cohort of the training store's "
        "validation clips (training speakers only, as P-C allows); for `+lda` rows, "
        "against the cohort that `voxid fit-lda --cohort` stores with the model (the 281 "
        "training speakers' mean embeddings), i.e. the recogniser's own scores. `+vad`: "
        "every store keeps the clips' speech alone, as the recogniser embeds; without it "
        "the model trained on silence-free training chunks (prepare's default) met 1-s "
        "test clips whose silences it had never seen, and the training set left out fsdd "
        "(six voices, a third of each epoch). `+lda`: the same run after `voxid fit-lda` "
        "on its training split (281 speakers, 6,164 chunks; 192 dimensions kept: 150, 100 "
        "and 64 gave 12.8 %, 13.0 % and 13.8 %). ecapa_small +vad: 8 epochs gave 18.6 % "
        "(+lda 14.8 %); 14 epochs, stopped by the 20-minute cap one short of the 15 asked "
        "for, give 15.8 %, +lda 12.8 %, and 9.6 % with the model's cohort, 79 % on its own "
        "validation chunks, far from converged (see the 60-min row below). crnn +vad (12 "
        "epochs, the paper's network on speech-only log-mel stores) reaches 18.5 %, +lda 17.2 %, "
        "against 28.2 % for the earlier recipe; AS-norm makes it worse (21.2 % with its "
        "cohort), which is why `fit-lda` stores a cohort only when asked. "
        "ecapa_small +vad (60 min): the same recipe with three times the budget (P-C sets "
        "no cap; 32 of the 38 epochs asked for, the machine ran slower that hour) reaches "
        "90 % on its validation chunks against 79 %, yet only 13.6 %, +lda 11.5 % and 9.4 % "
        "with its cohort: what limits P-C is the 281 training speakers, 20 of them from "
        "asc30's recordings, not convergence. Other back-ends, tried offline on the 20-min "
        "model's embeddings, did no better than LDA with the cohort: an asc30-only LDA "
        "(20 speakers) 20.9 %, LDA then asc30 within-speaker whitening 15.5 % (11.0 % "
        "AS-normed), a cohort of asc30 training clips instead of the speakers' means 9.9-10.0 %. "
        "The MFCC + GMM baseline, with per-speaker GMMs normalised against asc30 "
        "00000001-00000020, measures 9.4 % here (the issue quotes 9.8 %): as good as our best "
        "network, because its cohort is in the test speakers' own recording conditions."
    ),
}
#: The fine-tuning rows (models finetune_all and finetune_gentle: the shipped base encoder,
#: `init: base`, on each protocol's training speakers), measured with --epochs and --minutes
#: smaller than the from-scratch rows' budget, so that all three fitted in one session.
FINETUNE_NOTE = (
    " finetune_all / finetune_gentle: the shipped base encoder fine-tuned on the protocol's "
    "training speakers (`voxid train finetune ... init=base`), every layer at one learning "
    "rate from the first epoch (the recipe's default) or gently (encoder frozen for the first "
    "epoch, then at a tenth of the head's rate); they ran 5-8 epochs, fewer than the "
    "from-scratch rows (`--epochs`): on P-A after 5 epochs 97.5 % against 81.4 % on the "
    "validation clips. The `(15 min)` rows (2026-12-02) fine-tuned stage 1 of the base "
    "recipe, the base shipped then; the `(8 epochs, 25 min)` and `(5 epochs, 25 min)` rows "
    "(2026-12-03) fine-tune stage 2, shipped since (P-Z EER 10.0 % against 13.2 % on P-C's "
    "trials): a better zero-shot encoder, yet the fine-tuned figures barely move (P-A "
    "93.8 -> 94.4 %, P-B EER 3.7 -> 4.0 %, never-seen FAR at FRR 2 % 15 % both; P-C "
    "15.7 -> 13.9 %, AS-normed 12.7 -> 12.4 %, worse than the base zero-shot), so on these "
    "20-30 training speakers fine-tuning is not where the protocols' targets lie. The P-A "
    "and P-B `(8 epochs, 25 min)` rows were measured again on 2026-12-05 from stage 3 (nine "
    "warps, shipped since 2026-12-04; P-Z 9.8 % on P-C's trials): P-A 94.4 -> 96.4 % in 4.3 "
    "min, P-B EER 4.0 -> 3.1 %, never-seen FAR at FRR 2 % 15 -> 13.3 % in 3.0 min; the P-C "
    "`(5 epochs, 25 min)` row is still stage 2's. With more epochs on P-A (same day, stage "
    "3): 16 epochs 97.75 % (8.5 min), 24 (early-stopped after 18) 96.9 % (9.9 min): a "
    "spread of 1.3 points (16 clips of 1,200) with the budget, the 98 % target inside it "
    "and not reached. The 16-epoch P-A row, measured again on 2026-12-06, gave the same "
    "97.75 % (training is seeded) in 5.8 min; AS-norming its class scores against Speech "
    "Commands' clips, which helps P-B, lowers it to 97.25 % (top 50 or 100; 97.2 % top "
    "300), and nearest centroid of takes 01-03 gives 96.8 %. From stage 4 of the base "
    "recipe (outer warps, shipped since 2026-12-07; P-Z 9.8 / 13.2 / 11.7 / 0.2 %), the "
    "16-epoch P-A row gives 97.83 % in 5.6 min: two clips more, two short of 98 %. From "
    "stage 5 (13 warps, shipped since 2026-12-07 morning; P-Z 9.5 / 12.0 / 10.3 / 0.0 %) "
    "the same 97.83 % in 5.3 min (00000015's take 04 named 00000012 in 9 of its 40 clips). "
    "finetune_warps (2026-12-07): finetune_all on a store where every training speaker is "
    "also at speed 0.9 and 1.1, each copy a class of its own (`voxid prepare "
    "--speaker-augment`, as the base recipe trains: 90 classes, 9,720 training clips), "
    "the pseudo-voices left out of the closed set when evaluated (`voxid evaluate` does so "
    "for any `<speaker>@<augmentation>` class): 12 epochs in 12.5 min give 98.58 % (17 "
    "errors of 1,200), 00000015's take 04 named 00000012 in 3 clips: the warped copies "
    "teach the head where a voice ends, and the P-A target is met. A second run with "
    "another seed (`seed=1`, the same store and command otherwise, 12.2 min) gives "
    "98.00 % (24 errors; 00000015 -> 00000012 in 5): the target holds on both seeds, at "
    "its line on the second. Both rows measured again from stage 6 of the base recipe "
    "(13 outer warps, 0.7-1.3, shipped since 2026-12-07 afternoon; P-Z 8.8 / 10.9 / 9.6 / "
    "0.0 %): finetune_all early-stopped after 10 of its 16 epochs, 97.08 % in 3.6 min "
    "(stage 5 ran all 16: 97.83 %); finetune_warps 98.50 % in 11.7 min (18 errors, "
    "00000015 -> 00000012 in 3): the pseudo-voices keep P-A at the target from either "
    "stage. From stage 7 (17 warps, 0.7-1.4, shipped since; P-Z 7.9 % on P-C's trials): "
    "finetune_all early-stopped after 13 of 16 epochs, 97.83 % in 4.4 min; finetune_warps "
    "98.08 % in 12.0 min (23 errors, 00000015 -> 00000012 in 6): at the target, 0.4 "
    "points below stage 6's run, within the two seeds' spread above."
)
for _name in ("pa", "pb", "pc"):
    FINDINGS[_name] += FINETUNE_NOTE


def _notes(name: str) -> str:
    logs = WORK / "logs"
    return (
        f"Each model trained with `max_minutes={DEFAULT_MINUTES}` on the 2-core CPU (a row "
        f"marked `(N min)`: N minutes, `--minutes N`); the exact "
        f"prepare/train/evaluate commands are printed by the script and logged under "
        f"{logs.relative_to(ROOT)}/{name}_*.log. Rows keep the date they were measured. "
        "Reference rows are the figures quoted in the project's issues for the same clips, "
        "not re-measured here; `resemblyzer` rows are that peer measured here (its "
        "pretrained encoder, no training) and `gmm (MFCC, cohort-normalised)` rows the "
        "classical baseline verifying, both scored as bench/peers.py says. "
        + FINDINGS.get(name, "")
    ).strip()


def refresh_notes(name: str) -> None:
    """Rewrite a result file's notes from FINDINGS, keeping its rows, command and date."""
    path = RESULTS / f"{name}.json"
    payload = json.loads(path.read_text())
    payload["notes"] = _notes(name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


def main() -> int:
    """Run the chosen protocols."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("VOXID_SHARED_DATA", ROOT.parent / "shared" / "data")),
    )
    ap.add_argument("--protocols", default="pa,pb,pc")
    # A smoke run trains one model, half a minute per protocol: it checks the commands work.
    every = f"crnn,ecapa,ecapa_small,finetune,seed_cnn,gmm,{peers.PEER}"
    ap.add_argument("--models", default="crnn" if quick() else every)
    ap.add_argument(
        "--auth-scoring",
        default="speakers" if quick() else "speakers,binary",
        help="P-B variants: speakers (N-way, cosine to members) and/or binary (the paper's)",
    )
    ap.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    ap.add_argument(
        "--vad",
        action="store_true",
        help="stores of speech only (VAD, variable-length chunks), as the recogniser embeds",
    )
    ap.add_argument("--epochs", type=int, help="train this many epochs (default: per model)")
    ap.add_argument(
        "--lda",
        action="store_true",
        help="P-C: also score each run after voxid fit-lda on its training speakers",
    )
    ap.add_argument(
        "--refresh-notes",
        action="store_true",
        help="only rewrite the notes under the chosen protocols' tables (no training)",
    )
    args = ap.parse_args()
    if args.refresh_notes:
        for name in args.protocols.split(","):
            refresh_notes(name)
        return 0
    global VAD, LDA, MINUTES, FIXED_EPOCHS
    VAD, LDA, MINUTES, FIXED_EPOCHS = args.vad, args.lda, args.minutes, args.epochs
    if args.epochs:
        EPOCHS.update(dict.fromkeys(args.models.split(","), args.epochs))
        EPOCHS_PC.update(dict.fromkeys(args.models.split(","), args.epochs))
    models = [m for m in args.models.split(",") if m]
    scorings = tuple(s for s in args.auth_scoring.split(",") if s)
    table = {
        "pa": protocol_pa,
        "pb": lambda d, m, t: protocol_pb(d, m, t, scorings),
        "pc": protocol_pc,
    }
    WORK.mkdir(parents=True, exist_ok=True)
    for name in args.protocols.split(","):
        table[name](args.data.resolve(), models, args.minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
