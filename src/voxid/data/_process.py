"""Per-file work of `voxid prepare`, run in worker processes: read, decode, VAD, augment,
chunk and compute features. Everything here is a pure function of the file's bytes and
the settings (files are streamed, never read whole), so results do not depend on which
worker ran them or when."""

from __future__ import annotations

import hashlib
import signal
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxid.errors import ConfigError, VoxidError, reason

# One entry per worker process: settings, the feature frontend and the noise bank.
_STATE: dict[str, Any] = {}


@dataclass(frozen=True)
class FileJob:
    """One file to process: its position in the corpus (for ordering and seeding),
    its path and the offline augmentations to apply (training files only)."""

    index: int
    path: str
    augment: tuple[str, ...] = ()


@dataclass
class FileResult:
    """What a worker sends back: per item (augmentation tag, chunk index, features,
    seconds of audio), or the reason the file was skipped."""

    index: int
    digest: str = ""
    seconds: float = 0.0  # decoded audio
    kept_seconds: float = 0.0  # after the VAD
    items: list[tuple[str, int, np.ndarray, float]] = field(default_factory=list)
    error: str | None = None


def init_worker(settings: dict[str, Any], ignore_sigint: bool = True) -> None:
    """Set up a worker: one torch thread (the pool gives parallelism), the frontend, and
    SIGINT ignored so that only the parent handles Ctrl-C and cleans up."""
    import torch

    from voxid.features import FeatureConfig, build_frontend

    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # A forked worker inherits the parent's SIGTERM handler; Pool.terminate() needs
        # the default action, or the pool waits forever for workers to exit.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    cfg = FeatureConfig.from_dict(settings["feature"])
    from voxid.vad import ChunkConfig, VadConfig

    _STATE.clear()
    _STATE.update(settings=settings, feature=cfg)
    # Parsed once per worker rather than per file: thousands of short files add up.
    _STATE["vad"] = VadConfig.from_dict(settings["vad"])
    _STATE["chunker"] = ChunkConfig.from_dict(settings["chunk"]) if settings["chunk"] else None
    if cfg.kind != "waveform":
        _STATE["frontend"] = build_frontend(cfg).eval()
    if settings.get("noise_dir"):
        from voxid.augment import NoiseBank

        _STATE["noise_bank"] = NoiseBank(settings["noise_dir"])


def _features(chunks: list[np.ndarray]) -> list[np.ndarray]:
    cfg = _STATE["feature"]
    if cfg.kind == "waveform":
        return [np.ascontiguousarray(c, dtype=np.float32) for c in chunks]
    import torch

    frontend = _STATE["frontend"]
    out: list[np.ndarray] = []
    with torch.inference_mode():
        # Equal-length chunks go through the frontend as one batch: far fewer torch calls.
        if len({c.size for c in chunks}) == 1:
            feats = frontend(torch.from_numpy(np.stack(chunks)))
            out = [f.numpy().astype(np.float32, copy=False) for f in feats]
        else:
            out = [frontend(torch.from_numpy(c)[None])[0].numpy() for c in chunks]
    return [np.ascontiguousarray(f, dtype=np.float32) for f in out]


def _augment(name: str, wav: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    from voxid.augment import offline_augmentation

    fn = offline_augmentation(name)
    if fn is None:  # PrepareConfig rejects these before any worker starts
        raise ConfigError(f"augment: unknown augmentation {name!r}")
    return np.asarray(fn(wav, sr, rng, noise_bank=_STATE.get("noise_bank")), dtype=np.float32)


def _seed_for(index: int, name: str) -> np.random.Generator:
    base = _STATE["settings"]["seed"]
    digest = hashlib.sha256(f"{base}\x1f{index}\x1f{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def file_digest(path: str, block: int = 1 << 20) -> str:
    """The BLAKE2b-128 hex digest of a file's bytes, read `block` bytes at a time.

    >>> import os, tempfile
    >>> fd, name = tempfile.mkstemp(); _ = os.write(fd, b"abc"); os.close(fd)
    >>> file_digest(name) == hashlib.blake2b(b"abc", digest_size=16).hexdigest()
    True
    >>> os.remove(name)
    """
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(block):
                digest.update(chunk)
    except OSError as exc:
        raise VoxidError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def normalize_level(wav: np.ndarray, how: str | None) -> np.ndarray:
    """Scale `wav` as `voxid.audio.load_audio(normalize=how)` does (whole-signal gain).

    >>> normalize_level(np.array([0.5, -0.25], np.float32), "peak").tolist()
    [1.0, -0.5]
    """
    if how == "peak":
        return wav / np.float32(np.abs(wav).max())
    if how == "rms":  # -20 dBFS, as load_audio
        return wav * np.float32(0.1 / float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))))
    return wav


def process_file(job: FileJob) -> FileResult:
    """Turn one file into stored items; any VoxidError becomes a skip with its reason."""
    from voxid.audio import load_audio

    s = _STATE["settings"]
    sr = _STATE["feature"].sample_rate
    vad = _STATE["vad"]
    res = FileResult(job.index)
    try:
        # The decoder reads the file block by block (refusing it from its header when it is
        # too long), so neither the file nor its samples at the native rate sit in memory.
        wav = load_audio(job.path, sr, max_seconds=s["max_seconds"], name=job.path)
        res.digest = file_digest(job.path)
        res.seconds = wav.size / sr
        # The VAD sees the level as recorded (its floor is absolute: faint noise must not
        # become speech by normalisation); the gain is then the whole file's, as before.
        segments = vad.segments(wav, sr)
        if not segments:
            level = 10 * np.log10(np.mean(wav.astype(np.float64) ** 2) + 1e-20)
            raise VoxidError(
                f"{job.path}: no speech found by the {vad.method} VAD "
                f"({res.seconds:.2f} s at {level:.0f} dBFS RMS)"
                if vad.enabled
                else f"{job.path}: no samples"
            )
        wav = normalize_level(wav, s["normalize"])
        wav = np.concatenate([wav[a:b] for a, b in segments])
        res.kept_seconds = wav.size / sr
        if wav.size < s["min_samples"]:
            raise VoxidError(f"{job.path}: too little speech after VAD ({res.kept_seconds:.2f} s)")
        chunker = _STATE["chunker"]
        variants = [("", wav)]
        for name in job.augment:
            variants.append((name, _augment(name, wav, sr, _seed_for(job.index, name))))
        for tag, signal_ in variants:
            chunks = chunker.apply(signal_, sr) if chunker else [signal_]
            if not chunks and chunker.tail != "drop":
                # A clip shorter than the tail minimum (a 1 s keyword after VAD) still
                # gives one chunk: dropping it would lose whole files of short corpora.
                size = round(chunker.seconds * sr)
                short = signal_[:size]
                if chunker.tail == "pad":
                    short = np.pad(short, (0, size - short.size))
                chunks = [short]
            if not chunks:
                if tag:
                    continue
                raise VoxidError(
                    f"{job.path}: shorter than one chunk after VAD "
                    f"({res.kept_seconds:.2f} s) and tail='drop'"
                )
            step = round((chunker.hop_seconds or chunker.seconds) * sr) if chunker else 0
            for i, feats in enumerate(_features(chunks)):
                # audio actually in the chunk: a padded tail holds less than its size
                secs = min(chunks[i].size, max(0, signal_.size - i * step)) / sr
                res.items.append((tag, i, feats, secs))
    except VoxidError as exc:
        res.items.clear()
        res.error = reason(exc, job.path)
    return res
