"""Synthetic conversations from real single-speaker utterances, reproducible from a seed.

Each conversation has 2-5 speakers of one corpus, turns of 1-8 s (a turn joins several
utterances of its speaker, 50-150 ms apart, and is cut to its drawn length), pauses of
0.1-1.5 s between turns, some overlap (15 % of the turn changes start 0.2-1.0 s before the
previous turn ends), a per-speaker level within ±3 dB, and a noise bed mixed at 10-30 dB
SNR against the speech. Utterances are trimmed of leading and trailing non-speech, and the
reference is each turn's speech (its clean source's speech activity, pauses under 0.3 s
bridged), so a pause inside a turn is not scored as speech.

Every speaker speaks at least once (the first turns go round all of them); after that the
next speaker is drawn among the others. Everything is resampled to the model rate.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from voxid.audio import load_audio
from voxid.vad import VadConfig

__all__ = ["Conversation", "SpeakerPool", "make_conversation", "make_conversations", "pool"]

#: speaker -> utterance files
SpeakerPool = dict[str, list[Path]]


@dataclass
class Conversation:
    """A generated recording and its reference turns `(start, end, speaker)` in seconds."""

    file_id: str
    audio: np.ndarray
    sr: int
    turns: list[tuple[float, float, str]]
    speakers: list[str]
    snr_db: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.audio.size / self.sr


def pool(corpus_dir: Path, speakers: Sequence[str] | None = None, prefix: str = "") -> SpeakerPool:
    """Utterances by speaker from a corpus folder's `manifest.csv` (`path,speaker,...`),
    only `speakers` when given; speaker names get `prefix` (to tell corpora apart)."""
    with open(Path(corpus_dir) / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    wanted = None if speakers is None else set(speakers)
    out: SpeakerPool = {}
    for r in rows:
        if wanted is None or r["speaker"] in wanted:
            out.setdefault(prefix + r["speaker"], []).append(Path(corpus_dir) / r["path"])
    return {k: sorted(v) for k, v in sorted(out.items())}


@lru_cache(maxsize=4096)
def _utterance(path: str, sr: int) -> np.ndarray:
    """An utterance at `sr`, leading and trailing silence trimmed."""
    wav = load_audio(path, sr=sr)
    segs = VadConfig().segments(wav, sr)
    if segs:
        wav = wav[segs[0][0] : segs[-1][1]]
    return wav.astype(np.float32)


def _turn(files: list[Path], rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    size = 0
    order = rng.permutation(len(files))
    i = 0
    while size < seconds * sr:
        wav = _utterance(str(files[order[i % len(order)]]), sr)
        i += 1
        if parts:
            gap = np.zeros(int(rng.uniform(0.05, 0.15) * sr), np.float32)
            parts.append(gap)
            size += gap.size
        parts.append(wav)
        size += wav.size
    turn = np.concatenate(parts)[: int(seconds * sr)]
    rms = float(np.sqrt(np.mean(turn.astype(np.float64) ** 2))) or 1.0
    return (turn * (0.1 / rms)).astype(np.float32)


def make_conversation(
    speakers: SpeakerPool,
    rng: np.random.Generator,
    *,
    n_speakers: int,
    noise: Sequence[np.ndarray] = (),
    sr: int = 16000,
    file_id: str = "conv",
    turn_s: tuple[float, float] = (1.0, 8.0),
    overlap_p: float = 0.15,
    snr_db: tuple[float, float] = (10.0, 30.0),
) -> Conversation:
    """One conversation of `n_speakers` speakers drawn from `speakers` (see module doc)."""
    names = sorted(speakers)
    chosen = [names[i] for i in rng.choice(len(names), n_speakers, replace=False)]
    gains = {s: 10 ** (rng.uniform(-3, 3) / 20) for s in chosen}
    n_turns = int(rng.integers(3 * n_speakers, 5 * n_speakers + 1))
    order = list(rng.permutation(chosen))
    while len(order) < n_turns:
        order.append(rng.choice([s for s in chosen if s != order[-1]]))
    placed: list[tuple[int, np.ndarray, str]] = []
    t = int(rng.uniform(0.2, 1.0) * sr)
    for speaker in order:
        wav = _turn(speakers[speaker], rng, rng.uniform(*turn_s), sr) * gains[speaker]
        if placed:
            prev_start, prev, _ = placed[-1]
            prev_end = prev_start + prev.size
            if rng.random() < overlap_p:
                back = int(rng.uniform(0.2, 1.0) * sr)
                t = max(prev_start + int(0.5 * sr), prev_end - back)
            else:
                t = prev_end + int(rng.uniform(0.1, 1.5) * sr)
        placed.append((t, wav, speaker))
    total = max(s + w.size for s, w, _ in placed) + int(rng.uniform(0.2, 1.0) * sr)
    mix = np.zeros(total, np.float32)
    speech = np.zeros(total, bool)
    for s, w, _ in placed:
        mix[s : s + w.size] += w
        speech[s : s + w.size] = True
    snr = float(rng.uniform(*snr_db))
    if noise:
        bed = noise[int(rng.integers(len(noise)))]
        start = int(rng.integers(max(1, bed.size - total)))
        bed = np.resize(np.roll(bed, -start), total).astype(np.float64)
        p_speech = float(np.mean(mix[speech].astype(np.float64) ** 2))
        p_noise = float(np.mean(bed**2)) or 1.0
        mix = mix + (bed * np.sqrt(p_speech / p_noise / 10 ** (snr / 10))).astype(np.float32)
    peak = float(np.abs(mix).max())
    if peak > 0.99:
        mix = mix * (0.99 / peak)
    turns = [((s + a) / sr, (s + b) / sr, spk) for s, w, spk in placed for a, b in _spoken(w, sr)]
    return Conversation(file_id, mix.astype(np.float32), sr, turns, chosen, snr)


def _spoken(turn: np.ndarray, sr: int) -> list[tuple[int, int]]:
    """Where a clean turn holds speech: the reference marks these, not the pauses inside
    a turn, as the references of simulated conversations come from the sources' own speech
    activity (here the default VAD on the clean source before any noise is mixed in,
    pauses under 0.3 s bridged; many VoxForge files open and close on seconds of room
    noise as loud as their speech, which an energy detector would call speech)."""
    return VadConfig(min_silence_s=0.3).segments(turn, sr) or [(0, turn.size)]


def make_conversations(
    pools: Sequence[SpeakerPool],
    n: int,
    seed: int,
    *,
    noise_files: Sequence[Path] = (),
    sr: int = 16000,
    speakers: tuple[int, int] = (2, 5),
    prefix: str = "conv",
) -> list[Conversation]:
    """`n` conversations, cycling through `pools` (one corpus each), 2-5 speakers each
    (cycling through the counts, so every count is equally represented)."""
    rng = np.random.default_rng(seed)
    noise = [load_audio(p, sr=sr, max_seconds=None) for p in noise_files]
    counts = list(range(speakers[0], speakers[1] + 1))
    out = []
    for i in range(n):
        speakers_pool = pools[i % len(pools)]
        k = min(counts[(i // len(pools)) % len(counts)], len(speakers_pool))
        out.append(
            make_conversation(
                speakers_pool, rng, n_speakers=k, noise=noise, sr=sr, file_id=f"{prefix}{i:03d}"
            )
        )
    return out
