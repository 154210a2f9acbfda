"""Voice-activity detection: frame-level F1 of Silero and the energy VAD in noise, and speed.

Test signals are built so the reference is known by construction: real utterances
(LibriSpeech train-clean-100 and VoxForge, one per speaker), each at -26 dBFS RMS,
separated by gaps of 1-3 s, over a bed of one noise recording (boiler, washing machine,
both from ../shared/data/noise, or white noise) at a given SNR (speech RMS over noise
RMS), or no noise at all. Gap frames are never speech. Inside an utterance, a frame is
speech where the *clean* utterance is (energy within 40 dB of its loudest frame, pauses
under 0.3 s bridged): a rule on the clean signal, never on the noisy one the VADs see.
F1 is over 10-ms frames, speech as the positive class.

Both VADs run as every voxid caller runs them (`voxid.vad.VadConfig`), with the default
-70 dBFS level floor. Also measured: the share of frames called speech on signals with no
speech at all (faint white noise, dither, mains hum, the two noises), and speed in x real
time (median of 5 runs, one thread).

    .venv/bin/python bench/bench_vad.py          # BENCH_QUICK=1: fewer utterances
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, median_time, quick, write_result

SR = 16000
FRAME = SR // 100  # 10 ms
SNRS = (20, 10, 5, 0)
SPEECH_DBFS = -26.0
MIN_RANGE_DB = 35.0
DATA = Path(
    os.environ.get("VOXID_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


def quiet_background(wav: np.ndarray) -> bool:
    """True when the recording's own background (its 10th-percentile frame) is at least
    `MIN_RANGE_DB` below its loudest frame: only there is a level rule a fair reference."""
    from voxid.vad import frame_energy_db

    db, _ = frame_energy_db(wav, SR)
    return float(np.percentile(db, 10)) <= -MIN_RANGE_DB


def utterances(n_per_corpus: int) -> list[np.ndarray]:
    """Utterances from LibriSpeech and VoxForge recorded in quiet rooms (see
    `quiet_background`): one per speaker in name order, then second ones, until n each."""
    from voxid.audio import load_audio

    out = []
    for corpus in ("librispeech-100", "voxforge"):
        speakers = sorted(p for p in (DATA / corpus).iterdir() if p.is_dir())
        files = [
            sorted(f for f in spk.iterdir() if f.suffix in (".flac", ".wav")) for spk in speakers
        ]
        picked = 0
        for rank in range(max(len(f) for f in files)):
            for spk_files in files:
                if picked == n_per_corpus or rank >= len(spk_files):
                    continue
                wav = load_audio(spk_files[rank], sr=SR)
                if quiet_background(wav):
                    out.append((wav * (10 ** (SPEECH_DBFS / 20) / _rms(wav))).astype(np.float32))
                    picked += 1
    return out


def clean_reference(wav: np.ndarray) -> np.ndarray:
    """Speech mask of a clean utterance (see the module docstring)."""
    from voxid.vad import speech_segments

    mask = np.zeros(wav.size, bool)
    for a, b in speech_segments(wav, SR, threshold_db=-40, min_silence_s=0.3, pad_s=0.0):
        mask[a:b] = True
    return mask


def build(utts: list[np.ndarray], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Utterances separated by 1-3 s gaps (and one before the first): the signal, its
    frame reference (`clean_reference`) and its span reference (whole utterances)."""
    rng = np.random.default_rng(seed)
    parts, masks, spans = [], [], []
    for u in utts:
        gap = int(rng.uniform(1.0, 3.0) * SR)
        parts += [np.zeros(gap, np.float32), u]
        masks += [np.zeros(gap, bool), clean_reference(u)]
        spans += [np.zeros(gap, bool), np.ones(u.size, bool)]
    gap = int(2.0 * SR)
    parts.append(np.zeros(gap, np.float32))
    masks.append(np.zeros(gap, bool))
    spans.append(np.zeros(gap, bool))
    return np.concatenate(parts), np.concatenate(masks), np.concatenate(spans)


def noise_bed(name: str, n: int, seed: int = 0) -> np.ndarray:
    """`n` samples of a noise at unit RMS (a recording is looped from a random offset)."""
    from voxid.audio import load_audio

    rng = np.random.default_rng(seed)
    if name == "white":
        bed = rng.standard_normal(n)
    else:
        rec = load_audio(DATA / "noise" / f"{name}.wav", sr=SR)
        bed = np.roll(np.resize(rec, n), -int(rng.integers(rec.size)))
    return (bed / _rms(bed)).astype(np.float32)


def frames(mask: np.ndarray) -> np.ndarray:
    """10-ms frames: speech where most of the frame is."""
    n = mask.size // FRAME
    return mask[: n * FRAME].reshape(n, FRAME).mean(axis=1) >= 0.5


def scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of speech frames."""
    tp = float(np.sum(truth & pred))
    precision = tp / max(1.0, float(pred.sum()))
    recall = tp / max(1.0, float(truth.sum()))
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    return {"f1": round(f1, 3), "precision": round(precision, 3), "recall": round(recall, 3)}


def predicted(vad, wav: np.ndarray, sr: int = SR) -> np.ndarray:
    mask = np.zeros(wav.size, bool)
    for a, b in vad.segments(wav, sr):
        mask[a:b] = True
    return mask


def no_speech_signals() -> dict[str, tuple[np.ndarray, int]]:
    """Signals with no speech at all, 20 s each (dither 10 min, as in issue #15)."""
    rng = np.random.default_rng(1)
    t = np.arange(20 * SR) / SR
    n8 = 600 * 8000
    return {
        "white noise -120 dBFS": (1e-6 * rng.standard_normal(t.size).astype(np.float32), SR),
        "16-bit dither, 10 min (8 kHz)": (
            ((rng.random(n8) - rng.random(n8)) / 32768).astype(np.float32),
            8000,
        ),
        "50 Hz hum -13 dBFS": (
            (0.3 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 150 * t)).astype(
                np.float32
            ),
            SR,
        ),
        "white noise -30 dBFS": (0.0316 * rng.standard_normal(t.size).astype(np.float32), SR),
        "boiler -30 dBFS": (0.0316 * noise_bed("boiler", t.size), SR),
        "washing machine -30 dBFS": (0.0316 * noise_bed("washing_machine", t.size), SR),
    }


def main() -> int:
    from voxid.vad import VadConfig

    if not (DATA / "README.md").exists():
        print(f"bench_vad: {DATA} not present", file=sys.stderr)
        return 1
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    vads = {"silero": VadConfig(), "energy": VadConfig(method="energy")}
    utts = utterances(3 if quick() else 10)
    clean, mask, span_mask = build(utts)
    truth, spans = frames(mask), frames(span_mask)
    speech_rms = _rms(clean[mask])
    rows = []
    conditions = [("none", None)] + [
        (noise, snr) for noise in ("boiler", "washing_machine", "white") for snr in SNRS
    ]
    for noise, snr in conditions:
        if snr is None:
            mixed = clean
        else:
            bed = noise_bed(noise, clean.size, seed=len(rows))
            mixed = (clean + bed * speech_rms * 10 ** (-snr / 20)).astype(np.float32)
        for name, vad in vads.items():
            pred = frames(predicted(vad, mixed))
            rows.append({"vad": name, "noise": noise, "snr_db": snr, **scores(truth, pred),
                         "f1_spans": scores(spans, pred)["f1"]})  # fmt: skip
            print(rows[-1], flush=True)

    no_speech = []
    for label, (wav, sr) in no_speech_signals().items():
        row = {"signal": label}
        for name, vad in vads.items():
            row[f"{name}_speech_pct"] = round(100 * float(predicted(vad, wav, sr).mean()), 1)
        no_speech.append(row)
        print(row, flush=True)

    speed = []
    import soxr

    from voxid.silero import _RECENT

    for sr in (16000, 8000):
        wav = np.resize(clean, 60 * SR)
        if sr != SR:
            wav = soxr.resample(wav, SR, sr).astype(np.float32)
        for name, vad in vads.items():

            def run(v=vad, w=wav, s=sr):
                _RECENT.clear()  # time the network, not the cache of recent signals
                return v.segments(w, s)

            seconds = median_time(run, repeats=5)
            speed.append({"vad": name, "sample_rate": sr, "x_realtime": round(60 / seconds, 1)})
            print(speed[-1], flush=True)

    def f1(vad: str, noise: str, snr: int | None) -> float:
        return next(
            r["f1"] for r in rows if (r["vad"], r["noise"], r["snr_db"]) == (vad, noise, snr)
        )

    from run_all import table

    mean = {v: float(np.mean([r["f1"] for r in rows if r["vad"] == v and r["snr_db"] is not None]))
            for v in vads}  # fmt: skip
    notes = (
        f"Test set: {len(utts)} utterances ({len(utts) // 2} LibriSpeech, {len(utts) // 2} "
        f"VoxForge; {float(truth.sum()) / 100:.0f} s of reference speech in "
        f"{clean.size / SR:.0f} s), recorded with a background at least {MIN_RANGE_DB:.0f} "
        "dB below the speech peaks (noisier recordings would make a level rule a poor "
        "reference). Reference (`f1`, `precision`, `recall`): gaps are non-speech by "
        "construction; inside an utterance, the clean utterance's frames within 40 dB of its "
        "loudest (pauses under 0.3 s bridged). `f1_spans` takes every frame of an "
        "utterance, pauses included, as speech. Mean F1 over the 12 noisy conditions: "
        f"silero {mean['silero']:.3f}, energy {mean['energy']:.3f}; at 0 dB in the boiler "
        f"noise {f1('silero', 'boiler', 0):.3f} against {f1('energy', 'boiler', 0):.3f}. "
        f"Calling every frame speech would score f1 {scores(truth, np.ones_like(truth))['f1']:.3f}"
        f" and f1_spans {scores(spans, np.ones_like(spans))['f1']:.3f} on this set. "
        "The energy VAD compares frames with the loudest one, so a noise bed above 35 dB "
        "below the speech peaks is all speech to it (precision falls to the speech share).\n\n"
        "Share of frames called speech on signals without speech (issue #15: target 0 %; "
        "the -70 dBFS floor takes the faint ones for both VADs, only Silero tells hum and "
        "noise from speech):\n\n"
        + table(no_speech)
        + "\nSpeed (60 s of the test speech, one thread, median of 5 runs; Silero "
        "includes its 0.1-s lead-in and resampling where needed):\n\n" + table(speed)
    )
    out = write_result("vad", "Voice-activity detection: frame F1 in noise (issue #15)", rows,
                       notes=notes)  # fmt: skip
    payload = json.loads(out.read_text())
    payload.update(no_speech=no_speech, speed=speed)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out} ({RESULTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
