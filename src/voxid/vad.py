"""Voice-activity detection, silence removal and fixed-length chunking.

Two detectors, chosen by `VadConfig.method`:

- "silero" (the default): Silero VAD, a small neural network that tells speech from noise,
  hum and music (`voxid.silero`, run on onnxruntime).
- "energy": each frame's energy against the loudest frame of the same utterance, so it
  does not depend on recording gain, but any steady noise or hum is "speech" to it.

Both apply the same absolute level floor (`floor_dbfs`): a frame quieter than it is never
speech, so faint noise or dither gives nothing however an utterance is normalised. Short
gaps inside speech are bridged and short bursts dropped before a little padding is added
back around each kept segment. `VadConfig` is the one policy every caller uses: `prepare`,
the recogniser and its backends, the service and `listen`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from voxid.errors import ConfigError

__all__ = ["VAD_METHODS", "ChunkConfig", "VadConfig", "chunk", "frame_energy_db",
           "frame_level_dbfs", "remove_silence", "speech_segments"]  # fmt: skip

TAIL_POLICIES = ("pad", "drop", "keep")
VAD_METHODS = ("silero", "energy")
#: Default absolute floor (dBFS): below any real recording of speech (quiet speech at
#: -56 dBFS RMS has its syllables near -50), above dither (-90 dBFS) and numeric noise.
DEFAULT_FLOOR_DBFS = -70.0


def _check_wav(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ConfigError(f"wav: expected a 1-D mono array, got shape {wav.shape}")
    return wav


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not np.isfinite(value) or not ok:
        raise ConfigError(f"{name}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def frame_level_dbfs(wav: np.ndarray, sr: int, frame_ms: float = 25, hop_ms: float = 10):
    """Per-frame RMS level in dBFS (a full-scale square wave is 0 dBFS), and the frame hop.

    Frame i covers samples `[i * hop, i * hop + frame)`; a signal shorter than one frame
    is one zero-padded frame.

    >>> db, hop = frame_level_dbfs(np.full(1600, 0.1, "float32"), 16000)
    >>> hop, round(float(db[0]), 1)
    (160, -20.0)
    """
    wav = _check_wav(wav).astype(np.float64, copy=False)
    _positive("sr", sr)
    _positive("frame_ms", frame_ms)
    _positive("hop_ms", hop_ms)
    frame = max(1, round(frame_ms * sr / 1000))
    hop = max(1, round(hop_ms * sr / 1000))
    n_frames = 1 + max(0, -(-(wav.size - frame) // hop))
    padded = np.zeros((n_frames - 1) * hop + frame)
    padded[: wav.size] = wav
    # Cumulative sums give every frame's mean power in O(n), whatever the frame length.
    csum = np.concatenate([[0.0], np.cumsum(padded**2)])
    starts = np.arange(n_frames) * hop
    power = (csum[starts + frame] - csum[starts]) / frame
    return (10.0 * np.log10(np.maximum(power, 0.0) + 1e-20)).astype(np.float32), hop


def frame_energy_db(wav: np.ndarray, sr: int, frame_ms: float = 25, hop_ms: float = 10):
    """Per-frame energy in dB relative to the loudest frame (0 dB), and the frame hop.

    >>> db, hop = frame_energy_db(np.r_[np.zeros(800), np.ones(800)].astype("float32"), 16000)
    >>> hop, float(db.max()), bool(db[0] < -100)
    (160, 0.0, True)
    """
    db, hop = frame_level_dbfs(wav, sr, frame_ms, hop_ms)
    return db - db.max(), hop


def _runs(mask: np.ndarray) -> list[list[int]]:
    """[start, end) index runs where mask is True."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True)]


def speech_segments(
    wav: np.ndarray,
    sr: int,
    *,
    threshold_db: float = -35.0,
    frame_ms: float = 25,
    hop_ms: float = 10,
    min_speech_s: float = 0.1,
    min_silence_s: float = 0.2,
    pad_s: float = 0.05,
    floor_dbfs: float | None = None,
) -> list[tuple[int, int]]:
    """Energy-VAD speech segments as (start, end) sample indices, end exclusive.

    Arguments
    ---------
    threshold_db: a frame is speech when its energy is above this, relative to the
        loudest frame of the utterance (must be negative).
    min_silence_s: gaps shorter than this between speech are kept (bridged).
    min_speech_s: speech runs shorter than this (after bridging) are dropped.
    pad_s: kept around each segment, so word onsets and decays are not clipped.
    floor_dbfs: frames quieter than this absolute level are never speech (None: no floor).

    Digital silence gives no segments.

    >>> sr = 16000
    >>> wav = np.r_[np.zeros(sr), 0.5 * np.sin(np.arange(sr) / 3), np.zeros(sr)]
    >>> speech_segments(wav.astype("float32"), sr)
    [(14880, 33040)]
    """
    wav = _check_wav(wav)
    if not threshold_db < 0:
        raise ConfigError(f"threshold_db: must be negative (dB re the loudest frame), "
                          f"got {threshold_db!r}")  # fmt: skip
    for key, value in (("min_speech_s", min_speech_s), ("min_silence_s", min_silence_s),
                       ("pad_s", pad_s)):  # fmt: skip
        _positive(key, value, allow_zero=True)
    if wav.size == 0 or not np.any(wav):
        return []
    level, hop = frame_level_dbfs(wav, sr, frame_ms, hop_ms)
    frame = max(1, round(frame_ms * sr / 1000))
    loud = level - level.max() > threshold_db
    if floor_dbfs is not None:
        loud &= level >= floor_dbfs
    runs = _runs(loud)
    if not runs:
        return []

    bridged: list[list[int]] = []
    for run in runs:
        if bridged and (run[0] - bridged[-1][1]) * hop < min_silence_s * sr:
            bridged[-1][1] = run[1]
        else:
            bridged.append(run)
    min_frames = min_speech_s * sr / hop
    kept = [r for r in bridged if r[1] - r[0] >= min_frames] or [max(bridged, key=_length)]

    pad = round(pad_s * sr)
    segments: list[tuple[int, int]] = []
    for a, b in kept:
        start = max(0, a * hop - pad)
        end = min(wav.size, (b - 1) * hop + frame + pad)
        if segments and start <= segments[-1][1]:
            segments[-1] = (segments[-1][0], end)
        else:
            segments.append((start, end))
    return segments


def _length(run: list[int]) -> int:
    return run[1] - run[0]


def remove_silence(wav: np.ndarray, sr: int, **vad_kwargs: Any) -> np.ndarray:
    """Join the speech segments of `wav` (see `speech_segments` for the keyword arguments).

    Returns an empty array for digital silence; callers decide whether that is an error.

    >>> sr = 16000
    >>> wav = np.r_[np.zeros(sr), 0.5 * np.sin(np.arange(sr) / 3), np.zeros(sr)]
    >>> remove_silence(wav.astype("float32"), sr).shape
    (18160,)
    """
    wav = _check_wav(wav)
    segments = speech_segments(wav, sr, **vad_kwargs)
    if not segments:
        return wav[:0].copy()
    return np.concatenate([wav[a:b] for a, b in segments])


def chunk(
    wav: np.ndarray,
    sr: int,
    *,
    seconds: float = 1.0,
    hop_seconds: float | None = None,
    tail: str = "pad",
    min_tail_seconds: float = 0.5,
) -> list[np.ndarray]:
    """Cut `wav` into windows of `seconds`, each starting `hop_seconds` after the last.

    `hop_seconds=None` means no overlap. What is left after the last full window (or the
    whole signal, when shorter than one window) is the tail: with `tail="drop"` it is
    discarded; with `"pad"` it is zero-padded to a full window and with `"keep"` kept as
    a shorter chunk, but in both cases only when it lasts at least `min_tail_seconds`.

    >>> wav = np.ones(25, dtype="float32")
    >>> [c.size for c in chunk(wav, 10, seconds=1.0)]
    [10, 10, 10]
    >>> [c.size for c in chunk(wav, 10, seconds=1.0, tail="keep")]
    [10, 10, 5]
    >>> [c.size for c in chunk(wav, 10, seconds=1.0, hop_seconds=0.5, tail="drop")]
    [10, 10, 10, 10]
    """
    wav = _check_wav(wav)
    _positive("seconds", seconds)
    if hop_seconds is not None:
        _positive("hop_seconds", hop_seconds)
    _positive("min_tail_seconds", min_tail_seconds, allow_zero=True)
    if tail not in TAIL_POLICIES:
        raise ConfigError(f"tail: must be one of {TAIL_POLICIES}, got {tail!r}")
    size = max(1, round(seconds * sr))
    step = size if hop_seconds is None else max(1, round(hop_seconds * sr))
    starts = range(0, wav.size - size + 1, step) if wav.size >= size else range(0)
    chunks = [wav[s : s + size] for s in starts]
    tail_start = starts[-1] + step if chunks else 0
    covered = starts[-1] + size if chunks else 0
    rest = wav[tail_start:] if covered < wav.size else wav[:0]
    if tail != "drop" and rest.size and rest.size >= round(min_tail_seconds * sr):
        if tail == "pad":
            rest = np.concatenate([rest, np.zeros(size - rest.size, dtype=wav.dtype)])
        chunks.append(rest)
    return chunks


class _Config:
    # Set by @dataclass on every subclass; declared so fields() and asdict() type-check.
    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a dict, refusing unknown keys (a typo must not pass silently)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown keys {unknown}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (for YAML, HDF5 attributes and checkpoints)."""
        return asdict(self)


@dataclass
class VadConfig(_Config):
    """The VAD policy: which detector, its settings, and the absolute level floor.

    Arguments
    ---------
    enabled: False keeps the whole signal (no VAD, no floor).
    method: "silero" (a neural VAD that tells speech from noise) or "energy" (frames near
        the loudest one of the utterance).
    threshold: Silero's speech probability to enter speech (it leaves below
        `threshold - 0.15`).
    threshold_db: energy VAD only: dB re the loudest frame (negative).
    floor_dbfs: frames quieter than this (RMS, dBFS) are never speech, by either method.
    frame_ms, hop_ms: the energy VAD's frames (and the floor's, for it); Silero's own
        windows are 32 ms.
    min_speech_s, min_silence_s, pad_s: segments shorter than min_speech_s are dropped,
        gaps shorter than min_silence_s bridged, pad_s added around each segment.

    Stored configs without `method` or `floor_dbfs` (written before they existed) load
    with the defaults: Silero and the floor.

    >>> cfg = VadConfig(method="energy", threshold_db=-40.0)
    >>> VadConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> VadConfig().segments(np.zeros(16000, np.float32), 16000)
    []
    """

    enabled: bool = True
    method: str = "silero"
    threshold: float = 0.5
    threshold_db: float = -35.0
    floor_dbfs: float = DEFAULT_FLOOR_DBFS
    frame_ms: float = 25
    hop_ms: float = 10
    min_speech_s: float = 0.1
    min_silence_s: float = 0.2
    pad_s: float = 0.05

    def __post_init__(self) -> None:
        if self.method not in VAD_METHODS:
            raise ConfigError(f"vad.method: must be one of {VAD_METHODS}, got {self.method!r}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"vad.threshold: must be in (0, 1) (a speech probability), "
                              f"got {self.threshold!r}")  # fmt: skip
        if not (np.isfinite(self.floor_dbfs) and self.floor_dbfs < 0):
            raise ConfigError(f"vad.floor_dbfs: must be a negative level in dBFS, "
                              f"got {self.floor_dbfs!r}")  # fmt: skip

    def segments(self, wav: np.ndarray, sr: int) -> list[tuple[int, int]]:
        """Speech segments `(start, end)` in samples of `wav` (the whole signal when
        disabled)."""
        wav = _check_wav(wav)
        if not self.enabled:
            return [(0, len(wav))] if len(wav) else []
        if self.method == "energy":
            kwargs = self.to_dict()
            for key in ("enabled", "method", "threshold"):
                del kwargs[key]
            return speech_segments(wav, sr, **kwargs)
        from voxid.silero import silero_segments

        if wav.size == 0 or not np.any(wav):
            return []
        for key in ("min_speech_s", "min_silence_s", "pad_s"):
            _positive(key, getattr(self, key), allow_zero=True)
        return silero_segments(
            wav,
            sr,
            threshold=self.threshold,
            min_speech_s=self.min_speech_s,
            min_silence_s=self.min_silence_s,
            pad_s=self.pad_s,
            floor_dbfs=self.floor_dbfs,
        )

    def apply(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """`remove_silence` with these settings (identity when disabled)."""
        return np.concatenate([wav[a:b] for a, b in self.segments(wav, sr)] or [wav[:0]])

    def speech_ratio(self, wav: np.ndarray, sr: int) -> float:
        """Fraction of `wav` that is speech by this policy (0 for an empty signal)."""
        if len(wav) == 0:
            return 0.0
        return sum(b - a for a, b in self.segments(wav, sr)) / len(wav)


@dataclass
class ChunkConfig(_Config):
    """Parameters of `chunk`.

    >>> ChunkConfig(seconds=2.0).to_dict()["tail"]
    'pad'
    """

    seconds: float = 1.0
    hop_seconds: float | None = None
    tail: str = "pad"
    min_tail_seconds: float = 0.5

    def apply(self, wav: np.ndarray, sr: int) -> list[np.ndarray]:
        """`chunk` with these settings."""
        return chunk(wav, sr, **self.to_dict())
