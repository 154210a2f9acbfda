"""P-Z: a pretrained model used as shipped, with no training on the test corpora.

    python bench/bench_zeroshot.py --data ../shared/data [--models base,resemblyzer]
                                   [--model-path FILE --label NAME]

Every set is scored the same way for every model: each enrolled speaker is the mean of its
enrolment clips' unit embeddings, and every test clip is scored (cosine) against every
enrolled speaker. Sets (../shared/data/README.md, P-Z):
- `asc30 21-30 (P-C trials)`: enrol takes 01-03, test take 04: 4,000 trials, 400 target;
- `asc30 01-20`: the same with the other twenty speakers;
- `fsdd`, `voxforge`: each speaker's files sorted by name, first half enrolled, the rest
  tested.
voxid's model embeds each file as the recogniser does (`Recognizer.embed_many`: decode,
VAD, chunks, mean of chunk embeddings); Resemblyzer as its README does
(`preprocess_wav`, `embed_utterance`). Reports EER, minDCF (p_target 0.01) and closed-set
top-1, and the embedding time of each model over all the sets. A second table
(pz_centring.json) probes a back-end step voxid does not take: the embeddings centred on the
enrolled speakers, scored against enrolled impostors and against strangers.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import write_result  # noqa: E402
from voxid import metrics  # noqa: E402
from voxid.evaluation.common import l2_normalize  # noqa: E402
from voxid.inference.registry import mean_embedding  # noqa: E402
from voxid.inference.scoring import as_norm  # noqa: E402

RESEMBLYZER = "resemblyzer"
CENTRING_TITLE = "P-Z probe: embeddings centred on the enrolled speakers (not what voxid does)"
CENTRING_NOTES = (
    "The P-Z sets scored as above (eer), and again with every embedding, its cohort's too, "
    "moved by the mean of the set's enrolment embeddings and made unit length again "
    "(eer_centred): a back-end step any encoder can take, without labels. For the two asc30 "
    "sets, strangers too: the other asc30 set's take-04 clips, voices nobody enrolled, scored "
    "against every enrolled speaker as non-target trials beside the set's own target trials "
    "(eer_vs_strangers), and strangers_in_at_frr_0.02: the share of strangers whose best "
    "score passes the threshold that 98 % of target trials pass (an identification that "
    "should say unknown). Centring separates the enrolled voices from each other for both "
    "models, but it does not keep strangers out: their EER barely moves for voxid and rises "
    "for Resemblyzer, and more of them pass at FRR 2 % for both. The trials of P-Z (and P-C) "
    "have only enrolled speakers as impostors, which is what centring on their mean exploits. "
    "voxid keeps to the plain scores, and the P-Z table above compares them."
)


def _manifest(corpus: Path) -> list[dict[str, str]]:
    with open(corpus / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def zero_shot_sets(data: Path) -> dict[str, list[dict]]:
    """Each set's rows: path, speaker, role (`enroll` or `test`)."""
    sets: dict[str, list[dict]] = {}
    asc = _manifest(data / "asc30")
    for name, lo, hi in (("asc30 21-30 (P-C trials)", 21, 30), ("asc30 01-20", 1, 20)):
        sets[name] = [
            {"path": data / "asc30" / r["path"], "speaker": r["speaker"],
             "role": "test" if r["take"] == "04" else "enroll"}
            for r in asc if lo <= int(r["speaker"]) <= hi
        ]  # fmt: skip
    for corpus in ("fsdd", "voxforge"):
        if not (data / corpus / "manifest.csv").is_file():
            continue
        rows = _manifest(data / corpus)
        by_speaker: dict[str, list[str]] = {}
        for r in rows:
            by_speaker.setdefault(r["speaker"], []).append(r["path"])
        out = []
        for speaker, paths in sorted(by_speaker.items()):
            paths = sorted(paths)
            half = len(paths) // 2
            out += [
                {"path": data / corpus / p, "speaker": speaker,
                 "role": "enroll" if i < half else "test"}
                for i, p in enumerate(paths)
            ]  # fmt: skip
        sets[corpus] = out
    return sets


def _enrolled(emb: np.ndarray, rows: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The set's enrolled names, their mean unit embeddings, and its scorable test rows."""
    speaker = np.array([r["speaker"] for r in rows])
    enroll = np.array([r["role"] == "enroll" for r in rows])
    ok = np.isfinite(emb).all(axis=1)
    names = sorted(set(speaker[enroll & ok]))
    cents = np.stack([mean_embedding(emb[enroll & ok & (speaker == n)]) for n in names])
    return names, cents, ~enroll & ok & np.isin(speaker, names)


def _scores(test: np.ndarray, cents: np.ndarray, cohort: np.ndarray | None) -> np.ndarray:
    scores = l2_normalize(test) @ cents.T
    return scores if cohort is None else as_norm(scores, l2_normalize(test), cents, cohort)


def _trials(
    emb: np.ndarray, rows: list[dict], cohort: np.ndarray | None
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The set's enrolled names and means, and every test clip's scores against them with
    the speaker each test clip is (`names`, `cents`, `scores (T, S)`, `target (T, S)`,
    `speaker (T,)`)."""
    names, cents, test = _enrolled(emb, rows)
    speaker = np.array([r["speaker"] for r in rows])[test]
    scores = _scores(emb[test], cents, cohort)
    return names, cents, scores, speaker[:, None] == np.array(names)[None, :], speaker


def score_set(emb: np.ndarray, rows: list[dict], cohort: np.ndarray | None = None) -> dict:
    """EER, minDCF and top-1 of every test clip against every enrolled speaker's mean;
    with a `cohort` (a model fitted with `voxid fit-lda --cohort`), the scores are AS-normed
    against it, as the recogniser scores them."""
    names, _, scores, target, speaker = _trials(emb, rows, cohort)
    tar, non = scores[target], scores[~target]
    top1 = float(np.mean(np.array(names)[scores.argmax(1)] == speaker))
    return {
        "speakers": len(names),
        "eer": metrics.eer(tar, non)[0],
        "min_dcf_0.01": metrics.min_dcf(tar, non, 0.01),
        "top1": top1,
        "trials": int(target.size),
        "targets": int(target.sum()),
        "skipped_files": int((~np.isfinite(emb).all(axis=1)).sum()),
    }


def centred(
    emb: np.ndarray, rows: list[dict], cohort: np.ndarray | None, *others: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:
    """Every embedding (the set's, its cohort's, and `others`) moved by the mean of the set's
    enrolment embeddings, then unit length again: the probe of pz_centring.json."""
    enroll = np.array([r["role"] == "enroll" for r in rows]) & np.isfinite(emb).all(axis=1)
    mu = l2_normalize(emb[enroll]).mean(axis=0)

    def move(x: np.ndarray) -> np.ndarray:
        return l2_normalize(l2_normalize(x) - mu)

    return move(emb), None if cohort is None else move(cohort), [move(o) for o in others]


def stranger_scores(
    emb: np.ndarray, rows: list[dict], outsiders: np.ndarray, cohort: np.ndarray | None
) -> tuple[float, float]:
    """The set's target trials against `outsiders` (test clips of voices nobody enrolled:
    strangers, not enrolled impostors) scored against every enrolled speaker: the EER, and
    the share of strangers whose best score passes where 98 % of target trials do (an
    identification that should answer "unknown")."""
    _, cents, scores, target, _ = _trials(emb, rows, cohort)
    tar = scores[target]
    ok = np.isfinite(outsiders).all(axis=1)
    strangers = _scores(outsiders[ok], cents, cohort)
    threshold = metrics.threshold_at_frr(tar, 0.02)
    return metrics.eer(tar, strangers.ravel())[0], float(np.mean(strangers.max(1) >= threshold))


def centring_rows(
    label: str, emb: np.ndarray, sets: dict[str, list[dict]], index: dict, cohort: np.ndarray | None
) -> list[dict]:
    """The centring probe's rows (pz_centring.json) for one model: each set's EER as
    scored, and with every embedding moved to the mean of the set's enrolment embeddings;
    for the two asc30 sets, also against the other asc30 set's take-04 clips as strangers."""
    asc = [name for name in sets if name.startswith("asc30")]
    rows = []
    for name, set_rows in sets.items():
        sub = emb[[index[r["path"]] for r in set_rows]]
        row: dict = {"model": label, "set": name, "eer": score_set(sub, set_rows, cohort)["eer"]}
        strangers = [
            emb[[index[r["path"]] for r in sets[other] if r["role"] == "test"]]
            for other in asc
            if other != name and name in asc
        ]
        moved, moved_cohort, moved_strangers = centred(sub, set_rows, cohort, *strangers)
        row["eer_centred"] = score_set(moved, set_rows, moved_cohort)["eer"]
        if strangers:
            row["strangers"] = len(strangers[0])
            for suffix, scored in (
                ("", stranger_scores(sub, set_rows, strangers[0], cohort)),
                ("_centred", stranger_scores(moved, set_rows, moved_strangers[0], moved_cohort)),
            ):
                row["eer_vs_strangers" + suffix] = scored[0]
                row["strangers_in_at_frr_0.02" + suffix] = scored[1]
        rows.append(row)
    return rows


def embed_voxid(
    model: str, paths: list[Path], tile: float | None = None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The recogniser's embeddings, the model's AS-norm cohort (None without one), and how
    many files the recogniser refused (under 0.5 s of speech, many FSDD digits): those are
    embedded whole, silences included, repeated to one input as the model's policy repeats
    short speech (one chunk, or its `min_input_seconds`), so every trial is scored.

    `tile` (a probe, not what the recogniser does): speech shorter than `tile` seconds is
    repeated to `tile` seconds instead of one chunk and embedded in one pass (refused files
    likewise, whole)."""
    from voxid import Recognizer
    from voxid.audio import load_audio

    rec = Recognizer.load(model, registry=None)
    emb = rec.embed_many([str(p) for p in paths], batch_size=64, errors=[])
    refused = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    policy = rec.backend.policy
    size = round(max(policy.seconds, policy.min_input_seconds or 0) * rec.sample_rate)
    for i in refused:
        wav = load_audio(paths[i], rec.sample_rate)
        emb[i] = l2_normalize(rec.backend.embed(np.resize(wav, size)[None]))[0]
    if tile:
        long = round(tile * rec.sample_rate)
        vad = policy.vad
        for i, path in enumerate(paths):
            wav = load_audio(path, rec.sample_rate)
            if i not in refused:
                spans = vad.segments(wav, rec.sample_rate)
                wav = np.concatenate([wav[a:b] for a, b in spans] or [wav[:0]])
            if wav.size < long:
                emb[i] = l2_normalize(rec.backend.embed(np.resize(wav, long)[None]))[0]
    return emb, rec.backend.cohort, int(refused.size)


def embed_resemblyzer(paths: list[Path], cache: Path | None = None) -> tuple[np.ndarray, float]:
    """Resemblyzer's embeddings, with its own preprocessing, and the seconds they took
    (kept in `cache`: the peer never changes, and it embeds at a tenth of voxid's speed)."""
    key = np.array([str(p) for p in paths])
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            if np.array_equal(z["paths"], key) and "seconds" in z:
                return z["emb"], float(z["seconds"])
    start = time.perf_counter()
    from resemblyzer import VoiceEncoder, preprocess_wav

    enc = VoiceEncoder("cpu", verbose=False)
    out = []
    for p in paths:
        wav = preprocess_wav(p)
        out.append(enc.embed_utterance(wav) if wav.size else np.full(256, np.nan))
    emb = np.stack(out).astype(np.float32)
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, emb=emb, paths=key, seconds=seconds)
        tmp.replace(cache)
    return emb, seconds


def main() -> int:
    """Measure P-Z for each model, write bench/results/pz.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=BENCH.parent.parent / "shared" / "data")
    parser.add_argument("--models", default=f"base,{RESEMBLYZER}")
    parser.add_argument("--model-path", action="append", default=[],
                        help="also measure this voxid model file (LABEL=PATH)")  # fmt: skip
    parser.add_argument("--sets", default="", help="only these sets (comma-separated prefixes)")
    parser.add_argument("--no-write", action="store_true", help="print, write no result file")
    parser.add_argument(
        "--tile", type=float, default=None,
        help="probe: repeat speech shorter than this many seconds to it, one pass (with "
        "--no-write)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.tile is not None and not (args.tile > 0 and args.no_write):
        parser.error("--tile: a positive number of seconds, with --no-write (a probe)")
    if not (args.data / "asc30").is_dir():
        print(f"bench_zeroshot: {args.data}/asc30 is missing; skipped")
        return 0
    sets = zero_shot_sets(args.data)
    if args.sets:
        wanted = tuple(args.sets.split(","))
        sets = {k: v for k, v in sets.items() if k.startswith(wanted)}
    paths = sorted({r["path"] for rows in sets.values() for r in rows})
    index = {p: i for i, p in enumerate(paths)}
    audio_s = 0.0
    import soundfile as sf

    for p in paths:
        audio_s += sf.info(str(p)).duration
    models = [(m, m) for m in args.models.split(",") if m]
    models += [tuple(spec.split("=", 1)) for spec in args.model_path]
    rows: list[dict] = []
    centring: list[dict] = []
    for label, spec in models:
        cohort, whole = None, 0
        if spec == RESEMBLYZER:
            emb, seconds = embed_resemblyzer(paths, BENCH / "work" / "pz_resemblyzer.npz")
            label = "resemblyzer (pretrained)"
        else:
            start = time.perf_counter()
            emb, cohort, whole = embed_voxid(spec, paths, args.tile)
            seconds = time.perf_counter() - start
            label = f"voxid {label}" + (f" (short speech to {args.tile:g} s)" if args.tile else "")
        for name, set_rows in sets.items():
            sub = emb[[index[r["path"]] for r in set_rows]]
            rows.append({"model": label, "set": name, **score_set(sub, set_rows, cohort)})
        centring += centring_rows(label, emb, sets, index, cohort)
        rows[-1]["embed_x_realtime"] = round(audio_s / seconds, 1)
        rows[-1]["files_embedded_whole"] = whole
        print(label, [f"{r['set']}: {r['eer']:.3f}" for r in rows[-len(sets) :]], flush=True)
    for row in centring:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    if args.no_write:
        return 0
    if centring:  # written beside pz.json (bench/results/pz_centring.json)
        write_result("pz_centring", CENTRING_TITLE, centring, notes=CENTRING_NOTES)
    write_result(
        "pz",
        "P-Z: zero-shot verification with a pretrained model (no training on these corpora)",
        rows,
        notes=(
            "Each speaker enrolled with the mean unit embedding of its enrolment files; every "
            "test file scored by cosine against every enrolled speaker. asc30: enrol takes "
            "01-03, test take 04 (the 21-30 set is exactly P-C's 4,000 trials); fsdd and "
            "voxforge: each speaker's files sorted by name, first half enrolled. voxid embeds "
            "files through the recogniser (its VAD and chunking), Resemblyzer with its own "
            "preprocessing. embed_x_realtime: seconds of audio embedded per second over all "
            f"sets ({audio_s:.0f} s of audio in {len(paths)} files), on the last row of each "
            "model. The base model never heard asc30, fsdd or voxforge (MODEL_CARD.md). "
            "files_embedded_whole: files the recogniser refuses (under 0.5 s of speech after "
            "its VAD), embedded whole instead so that every trial is scored; skipped_files: "
            "files a model could not embed at all (Resemblyzer's VAD left nothing)."
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
