"""Embedding speed: x real time, verify latency and peak memory, torch vs ONNX vs Resemblyzer.

For the models of the recipes `ecapa` (full size, 512 channels), `ecapa_small` (256) and
`crnn` (untrained weights: speed does not depend on training; or any `--model` given), on
the same real speech files:
- batched 1-s clips: model only (pre-decoded, 64 per batch) and end to end from files
  (`embed_many`: decode, VAD, chunk, embed);
- 15-s files, one `embed` per file (VAD, half-overlapping 1-s chunks batched);
- p50/p95 latency of one `verify` of a 3-s file after loading;
- the recogniser's peak RSS (load + one verify) measured in a fresh subprocess.
Resemblyzer's pretrained encoder runs beside them where installed
(`pip install webrtcvad-wheels && pip install --no-deps resemblyzer`).

Run: `.venv/bin/python bench/bench_embed.py [--model RUN ...]` (BENCH_QUICK=1 for a smoke run).
Writes bench/results/embed.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, quick, write_result

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VOXID_SHARED_DATA", REPO.parent / "shared" / "data"))
SR = 16000


def speech_files(root: Path) -> tuple[list[Path], list[Path], Path]:
    """1-s clips, 15-s files and one 3-s file of real speech, written as 16 kHz WAV."""
    n_clips, n_long = (16, 2) if quick() else (64, 8)
    from voxid.audio import load_audio

    if (DATA / "asc30").is_dir() and (DATA / "librispeech-100").is_dir():
        clips_src = sorted((DATA / "asc30").rglob("*.flac"))[::23][: 2 * n_clips]
        long_src = [
            p
            for p in sorted((DATA / "librispeech-100").rglob("*.flac"))
            if sf.info(p).duration >= 15.0
        ][:n_long]
    else:  # no shared data: espeak-ng sentences, concatenated for the long files
        from voxid.demo import synthesize_corpus

        synthesize_corpus(root / "espeak", n_speakers=4, n_sentences=8)
        clips_src = sorted((root / "espeak").rglob("*.wav"))[:n_clips]
        long_src = []
        wavs = [load_audio(p, SR) for p in clips_src]
        for i in range(n_long):
            path = root / f"long_src{i}.wav"
            sf.write(path, np.tile(np.concatenate(wavs[i:] + wavs[:i]), 2)[: 15 * SR], SR)
            long_src.append(path)
    from voxid.inference.backends import MIN_SPEECH_SECONDS
    from voxid.vad import VadConfig

    clips, longs = [], []
    for i, p in enumerate(clips_src):
        wav = np.resize(load_audio(p, SR), SR)  # exactly 1 s
        if VadConfig().apply(wav, SR).size < MIN_SPEECH_SECONDS * SR:
            continue  # a keyword too short for the recogniser to embed
        sf.write(root / f"clip{i}.wav", wav, SR)
        clips.append(root / f"clip{i}.wav")
    clips = clips[:n_clips]
    for i, p in enumerate(long_src):
        sf.write(root / f"long{i}.wav", load_audio(p, SR)[: 15 * SR], SR)
        longs.append(root / f"long{i}.wav")
    three = root / "three.wav"
    sf.write(three, load_audio(longs[0], SR)[: 3 * SR], SR)
    return clips, longs, three


RECIPES = ("ecapa", "ecapa_small", "crnn")


def recipe_models(root: Path) -> list[Path]:
    """The untrained model of each recipe in `RECIPES`, written as inference files."""
    from voxid.checkpoint import make_meta, save_inference_file
    from voxid.config import load_config
    from voxid.models import build_model

    out = []
    for name in RECIPES:
        cfg = load_config(name)
        model = build_model(cfg.model, n_classes=100, **cfg.hparams)
        audio = {"sample_rate": SR, "chunk": {"seconds": 1.0}}
        meta = make_meta(model, [f"spk{i:03d}" for i in range(100)], audio_config=audio)
        out.append(save_inference_file(root / f"{name}.pt", model, meta))
    return out


# VmHWM, not getrusage's ru_maxrss: Linux carries the forking parent's high-water mark
# into ru_maxrss across exec, so a child of this (large) process would report the parent's.
PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

RSS_CODE = (
    PEAK
    + """
import sys
from voxid.inference.recognizer import Recognizer
rec = Recognizer.load(sys.argv[1], sys.argv[2])
rec.enroll("probe", sys.argv[3])
rec.verify("probe", sys.argv[3])
print(peak_mb())
"""
)

RESEMBLYZER_RSS = (
    PEAK
    + """
import sys
from resemblyzer import VoiceEncoder, preprocess_wav
enc = VoiceEncoder("cpu", verbose=False)
e = enc.embed_utterance(preprocess_wav(sys.argv[1]))
print(peak_mb())
"""
)


def peak_rss(code: str, *args: str) -> float:
    """Peak resident memory (MB) of `code` run in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def latency(fn, n: int) -> tuple[float, float]:
    """p50 and p95 wall time of `fn` in milliseconds over `n` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def gemm_peak_gflops(threads: int, size: int = 2048, repeats: int = 15) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s), the best of `repeats` runs.

    A dense GEMM is as fast as the CPU's float arithmetic gets (MKL/oneDNN at ~90 % of the
    FMA units' peak), so no network built of convolutions can beat it.
    """
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def model_gflop_per_second_of_audio(model: Path) -> float | None:
    """Forward GFLOP of a model file's encoder for one second of 16 kHz audio (torch files)."""
    if model.suffix == ".onnx":
        return None
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from voxid.checkpoint import load_checkpoint

    _, net = load_checkpoint(model)
    net.eval()
    with torch.inference_mode():
        feats = net.frontend(torch.zeros(1, SR))
        with FlopCounterMode(display=False) as counter:
            net.encoder(feats)
    return counter.get_total_flops() / 1e9


def bench_voxid(model: Path, clips, longs, three, root: Path, repeats: int) -> dict:
    """Speed figures of one model file with its own backend."""
    from voxid.inference.recognizer import Recognizer

    rec = Recognizer.load(model, root / f"{model.stem}-{model.suffix[1:]}.db")
    batch = np.stack([sf.read(c, dtype="float32")[0] for c in clips])
    t_model = median_time(lambda: rec.backend.embed(batch), repeats)
    t_files = median_time(lambda: rec.embed_many(clips, batch_size=64, progress=False), repeats)
    t_long = median_time(lambda: [rec.embed(p) for p in longs], max(1, repeats // 2))
    rec.enroll("probe", three)
    p50, p95 = latency(lambda: rec.verify("probe", three), 10 if quick() else 30)
    rss = peak_rss(RSS_CODE, str(model), str(root / f"rss-{model.stem}.db"), str(three))
    gflop = model_gflop_per_second_of_audio(model)
    return {
        "model": model.stem if model.stem in RECIPES else rec.meta["model_name"],
        "backend": rec.backend.kind,
        "file": model.name,
        "x_rt_1s_batched_model": round(len(clips) / t_model, 1),
        "x_rt_1s_files": round(len(clips) / t_files, 1),
        "x_rt_15s_files": round(15 * len(longs) / t_long, 1),
        "verify_3s_p50_ms": round(p50, 1),
        "verify_3s_p95_ms": round(p95, 1),
        "peak_rss_mb": round(rss, 1),
        "gflop_per_audio_s": None if gflop is None else round(gflop, 3),
    }


def bench_resemblyzer(clips, longs, three, repeats: int) -> dict:
    """The same figures for Resemblyzer's pretrained GE2E encoder (its own preprocessing)."""
    try:
        import torch
        from resemblyzer import VoiceEncoder, preprocess_wav
        from resemblyzer.audio import wav_to_mel_spectrogram
        from resemblyzer.hparams import partials_n_frames
    except ImportError as exc:
        return {"model": "resemblyzer", "backend": "unavailable", "file": str(exc)}
    enc = VoiceEncoder("cpu", verbose=False)
    wavs = [preprocess_wav(c) for c in clips]

    def batched() -> None:
        # One 1.6-s partial per clip (padded, as embed_utterance does), in one batch.
        mels = [
            wav_to_mel_spectrogram(np.pad(w, (0, max(0, 25600 - len(w)))))[:partials_n_frames]
            for w in wavs
        ]
        with torch.inference_mode():
            enc(torch.from_numpy(np.stack(mels)))

    t_model = median_time(batched, repeats)
    t_files = median_time(lambda: [enc.embed_utterance(preprocess_wav(c)) for c in clips], repeats)
    t_long = median_time(
        lambda: [enc.embed_utterance(preprocess_wav(p)) for p in longs], max(1, repeats // 2)
    )
    ref = enc.embed_utterance(preprocess_wav(three))
    p50, p95 = latency(
        lambda: float(enc.embed_utterance(preprocess_wav(three)) @ ref), 10 if quick() else 30
    )
    return {
        "model": "resemblyzer",
        "backend": "torch",
        "file": "pretrained.pt",
        "x_rt_1s_batched_model": round(len(clips) / t_model, 1),
        "x_rt_1s_files": round(len(clips) / t_files, 1),
        "x_rt_15s_files": round(15 * len(longs) / t_long, 1),
        "verify_3s_p50_ms": round(p50, 1),
        "verify_3s_p95_ms": round(p95, 1),
        "peak_rss_mb": round(peak_rss(RESEMBLYZER_RSS, str(three)), 1),
    }


def main() -> None:
    """Run the benchmark and write bench/results/embed.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        type=Path,
        default=[],
        help="model(s) to bench instead of the untrained full-size ones",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    from voxid.inference.export import export_onnx

    threads = os.cpu_count() or 1
    peak = gemm_peak_gflops(threads)
    torch.set_num_threads(threads)
    repeats = 2 if quick() else 5
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips, longs, three = speech_files(root)
        models = args.model or recipe_models(root)
        rows = []
        for model in models:
            if model.suffix != ".onnx":
                onnx = root / f"{model.stem}.onnx"
                export_onnx(model, onnx)
                rows.append(bench_voxid(model, clips, longs, three, root, repeats))
                model = onnx
            rows.append(bench_voxid(model, clips, longs, three, root, repeats))
            print(rows[-2:] if len(rows) > 1 else rows, flush=True)
        rows.append(bench_resemblyzer(clips, longs, three, repeats))
        print(rows[-1], flush=True)
    # The compute bound: no implementation runs a model faster than the GEMM peak allows.
    flops = {r["model"]: r.get("gflop_per_audio_s") for r in rows if r.get("gflop_per_audio_s")}
    for row in rows:
        if flops.get(row["model"]):
            row["bound_x_rt"] = round(peak / flops[row["model"]], 1)
    # Two ratios: the models alone, and end to end from files (decode, VAD, features too).
    for key, ratio in (("x_rt_1s_batched_model", "vs_resemblyzer_model"),
                       ("x_rt_1s_files", "vs_resemblyzer_files")):  # fmt: skip
        ref = rows[-1].get(key)
        for row in rows:
            if ref and row.get(key):
                row[ratio] = round(row[key] / ref, 2)
    notes = (
        f"{len(clips)} one-second clips and {len(longs)} 15-s files of real speech "
        f"(asc30, librispeech-100 where present), 16 kHz. x_rt = seconds of audio per "
        f"second of wall time; targets: ecapa ONNX >= 200x on batched 1-s clips and >= 5x "
        f"Resemblyzer, verify of 3 s < 50 ms, peak RSS < 600 MB. Untrained weights unless "
        f"--model was given. Load average at start: {os.getloadavg()[0]:.1f}. "
        f"gflop_per_audio_s: the encoder's forward work for one second of audio (torch's "
        f"FLOP counter; the ONNX graph computes the same). bound_x_rt: the fastest that "
        f"work could run here, at this machine's fp32 GEMM rate measured in the same run "
        f"({peak:.0f} GFLOP/s with {threads} threads): a ceiling no implementation of the "
        f"model passes in fp32."
    )
    print(
        write_result("embed", "Embedding speed (x real time), latency, memory", rows, notes=notes)
    )


if __name__ == "__main__":
    main()
