"""Silero VAD (v6, MIT licence, https://github.com/snakers4/silero-vad) run on onnxruntime.

The `silero-vad` package ships the model as ONNX files; only those files are used here,
never its torch code. The network reads 32 ms windows (512 samples at 16 kHz, 256 at
8 kHz), each prefixed with the last 64 (32) samples of the window before, and carries a
recurrent state from one window to the next; it gives one speech probability per window.
At 16 kHz the package's "sequence" export runs all windows of a block in one call (the
same probabilities, bit for bit, about twice as fast); at 8 kHz the streaming export runs
window by window. Other rates are resampled to 16 kHz first.

Speech segments follow `silero_vad.get_speech_timestamps`: a segment starts at a window
whose probability reaches `threshold` and ends where it stays below `threshold - 0.15`
for `min_silence_s`; segments shorter than `min_speech_s` are dropped, and `pad_s` is
added around each one (split in the middle when two segments are closer than 2 x pad).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from voxid.errors import ConfigError, ModelError, require_positive

__all__ = ["LEAD_S", "RATES", "model_path", "silero_probabilities", "silero_segments",
           "window_levels_dbfs", "window_samples"]  # fmt: skip

#: Native rates of the model: (window, context) samples.
RATES = {16000: (512, 64), 8000: (256, 32)}
_STATE_SHAPE = (2, 1, 128)
_BLOCK_WINDOWS = 512  # windows per call of the sequence model (16 s at 16 kHz)
#: Silence run before and after a signal (see `silero_segments`).
LEAD_S = 0.1
#: Segments of the last few signals, by content (oldest dropped first).
_RECENT: dict[tuple, tuple[tuple[int, int], ...]] = {}
_RECENT_SIZE = 32
_RECENT_LOCK = threading.Lock()


def window_samples(sr: int) -> float:
    """Samples of `sr` per probability (32 ms; fractional where `sr` is resampled).

    >>> window_samples(16000), window_samples(8000), window_samples(44100)
    (512.0, 256.0, 1411.2)
    """
    if sr in RATES:
        return float(RATES[sr][0])
    return RATES[16000][0] * sr / 16000


def _session(name: str):
    """The onnxruntime session of a model file, made once per process: a forked worker
    (`prepare`) makes its own rather than share its parent's thread pools."""
    return _load_session(name, os.getpid())


@lru_cache(maxsize=4)
def _load_session(name: str, pid: int):
    """Load one model file. One intra-op thread: the network is tiny (a few ms per call),
    and callers already run one file per worker process."""
    import onnxruntime as ort

    file = model_path(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(file), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's own error types are not exported
        raise ModelError(f"Silero VAD: cannot load {file} ({exc})") from None


def model_path(name: str = "silero_vad.onnx") -> Path:
    """Where the installed silero-vad package keeps a model file.

    Found without importing the package: its `__init__` imports torch and sets torch's
    thread count for the whole process, and voxid needs none of its code.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "Silero VAD: the silero-vad package is not installed (pip install silero-vad); "
            "or choose the energy VAD (--vad energy, VadConfig(method='energy'))"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise ModelError(f"Silero VAD: {path} is missing (reinstall silero-vad >= 6)")
    return path


def _windows(wav: np.ndarray, size: int, context: int) -> np.ndarray:
    """(n, context + size) rows: each window after the last `context` samples of the one
    before (zeros for the first); the last window is zero-padded."""
    n = -(-wav.size // size)
    frames = np.zeros((n, size), np.float32)
    frames.reshape(-1)[: wav.size] = wav
    rows = np.zeros((n, context + size), np.float32)
    rows[:, context:] = frames
    rows[1:, :context] = frames[:-1, -context:]
    return rows


def _probabilities_native(wav: np.ndarray, sr: int) -> np.ndarray:
    size, context = RATES[sr]
    rows = _windows(wav, size, context)
    out = np.empty(len(rows), np.float32)
    if sr == 16000:
        session = _session("silero_vad_16k_sequence.onnx")
        h = np.zeros((1, 1, 128), np.float32)
        c = np.zeros((1, 1, 128), np.float32)
        for i in range(0, len(rows), _BLOCK_WINDOWS):
            block = rows[i : i + _BLOCK_WINDOWS]
            probs, h, c = session.run(
                ["speech_probs", "hn", "cn"], {"input": block, "h": h, "c": c}
            )
            out[i : i + len(block)] = probs.reshape(-1)
        return out
    session = _session("silero_vad.onnx")
    state = np.zeros(_STATE_SHAPE, np.float32)
    rate = np.array(sr, dtype=np.int64)
    for i, row in enumerate(rows):
        prob, state = session.run(None, {"input": row[None], "state": state, "sr": rate})
        out[i] = prob[0, 0]
    return out


def silero_probabilities(wav: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """Speech probability of each 32-ms window of `wav`, and the window hop in samples of
    `wav` (at `sr`; the last window may run past the end).

    >>> probs, hop = silero_probabilities(np.zeros(16000, np.float32), 16000)
    >>> probs.shape, hop, bool(probs.max() < 0.1)
    ((32,), 512.0, True)
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ConfigError(f"wav: expected a 1-D mono array, got shape {wav.shape}")
    require_positive("sr", sr, integer=True)
    if wav.size == 0:
        return np.zeros(0, np.float32), window_samples(sr)
    native = int(sr) if sr in RATES else 16000
    if native != sr:
        import soxr

        wav = soxr.resample(wav, int(sr), native, quality="HQ").astype(np.float32)
    # InferenceSession.run is thread-safe: the service's decode threads run it at once.
    probs = _probabilities_native(wav, native)
    return probs, window_samples(sr)


def hysteresis(
    probs: np.ndarray,
    hop: float,
    n_samples: int,
    *,
    threshold: float,
    min_speech: int,
    min_silence: int,
) -> list[tuple[int, int]]:
    """Unpadded [start, end) sample segments from window probabilities, as Silero's
    `get_speech_timestamps_from_probs` (without its maximum segment length).

    >>> hysteresis(np.r_[np.zeros(4), np.ones(10), np.zeros(10)], 512, 12288,
    ...            threshold=0.5, min_speech=4000, min_silence=1600)
    [(2048, 7168)]
    """
    neg = max(threshold - 0.15, 0.01)
    segments: list[tuple[int, int]] = []
    start: int | None = None
    temp_end = 0
    for i, p in enumerate(probs):
        cur = round(i * hop)
        if p >= threshold:
            temp_end = 0
            if start is None:
                start = cur
                continue
        if start is not None and p < neg:
            if not temp_end:
                temp_end = cur
            if cur - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                segments.append((start, temp_end))
            start, temp_end = None, 0
    if start is not None and n_samples - start > min_speech:
        segments.append((start, n_samples))
    return segments


def pad_segments(
    segments: list[tuple[int, int]], pad: int, n_samples: int
) -> list[tuple[int, int]]:
    """Widen each segment by `pad` samples, as Silero does: neighbours closer than 2 x pad
    share the gap between them equally (so segments never overlap).

    >>> pad_segments([(100, 200), (230, 400)], 20, 410)
    [(80, 215), (215, 410)]
    """
    out = [list(s) for s in segments]
    for i, seg in enumerate(out):
        if i == 0:
            seg[0] = max(0, seg[0] - pad)
        if i < len(out) - 1:
            gap = out[i + 1][0] - seg[1]
            if gap < 2 * pad:
                seg[1] += gap // 2
                out[i + 1][0] = max(0, out[i + 1][0] - gap // 2)
            else:
                seg[1] = min(n_samples, seg[1] + pad)
                out[i + 1][0] = max(0, out[i + 1][0] - pad)
        else:
            seg[1] = min(n_samples, seg[1] + pad)
    return [(a, b) for a, b in out if b > a]


def window_levels_dbfs(wav: np.ndarray, hop: float) -> np.ndarray:
    """RMS level (dBFS) of each window of `hop` samples (fractional hops are rounded per
    window), the last one over what is left.

    >>> window_levels_dbfs(np.r_[np.full(512, 0.1), np.zeros(100)], 512.0).round(1).tolist()
    [-20.0, -200.0]
    """
    n = max(1, int(np.ceil(wav.size / hop)))
    starts = np.round(np.arange(n) * hop).astype(np.int64)
    sizes = np.diff(np.r_[starts, wav.size]).clip(min=1)
    power = np.add.reduceat(np.asarray(wav, np.float64) ** 2, starts) / sizes
    return 10.0 * np.log10(power + 1e-20)


def silero_segments(
    wav: np.ndarray,
    sr: int,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.25,
    min_silence_s: float = 0.1,
    pad_s: float = 0.03,
    floor_dbfs: float | None = None,
) -> list[tuple[int, int]]:
    """Speech segments of `wav` as (start, end) samples by Silero VAD (Silero's defaults).

    A window quieter than `floor_dbfs` (RMS) gets probability 0. The network needs a
    moment to settle and answers a few windows late, so a clip cut tight around a word
    would lose it: `LEAD_S` of silence is run before and after it (and cut off again).

    >>> silero_segments(np.zeros(16000, np.float32), 16000)
    []
    """
    if not 0 < threshold < 1:
        raise ConfigError(f"threshold: must be in (0, 1) (a speech probability), got {threshold!r}")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    # The service checks an upload's speech, then the recogniser cuts the same samples:
    # the second ask is answered from here (a hash costs ~1/50 of the network's time).
    key = (hashlib.blake2b(wav.data, digest_size=16).digest(), wav.size, int(sr), threshold,
           min_speech_s, min_silence_s, pad_s, floor_dbfs)  # fmt: skip
    with _RECENT_LOCK:
        hit = _RECENT.get(key)
    if hit is not None:
        return list(hit)
    segments = _segments(wav, sr, threshold, min_speech_s, min_silence_s, pad_s, floor_dbfs)
    with _RECENT_LOCK:
        _RECENT[key] = tuple(segments)
        while len(_RECENT) > _RECENT_SIZE:
            del _RECENT[next(iter(_RECENT))]
    return segments


def _segments(
    wav: np.ndarray,
    sr: int,
    threshold: float,
    min_speech_s: float,
    min_silence_s: float,
    pad_s: float,
    floor_dbfs: float | None,
) -> list[tuple[int, int]]:
    lead = round(LEAD_S * sr)
    padded = np.concatenate([np.zeros(lead, np.float32), wav, np.zeros(lead, np.float32)])
    hop = window_samples(sr)
    keep = None
    if floor_dbfs is not None:
        keep = window_levels_dbfs(padded, hop) >= floor_dbfs
        if not keep.any():  # all below the floor (dither, faint noise): no need to ask
            return []
    probs, hop = silero_probabilities(padded, sr)
    if keep is not None:
        # A resampled signal may end a window later or earlier than counted at `sr`.
        keep = np.pad(keep, (0, max(0, probs.size - keep.size)), mode="edge")[: probs.size]
        probs = np.where(keep, probs, 0.0)
    raw = hysteresis(
        probs,
        hop,
        padded.size,
        threshold=threshold,
        min_speech=round(min_speech_s * sr),
        min_silence=round(min_silence_s * sr),
    )
    shifted = [(max(0, a - lead), min(wav.size, b - lead)) for a, b in raw]
    return pad_segments([(a, b) for a, b in shifted if b > a], round(pad_s * sr), wav.size)
