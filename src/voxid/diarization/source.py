"""Audio read in blocks, so an hour-long recording never sits decoded in memory.

`blocks(audio, sr, block_s)` yields `(offset, samples)` pieces of the mono signal at `sr`
Hz in order. Files that libsndfile reads (WAV, FLAC, OGG...) and the other containers
(through PyAV) are both decoded and resampled block by block; bytes and arrays are small
by nature and come as one block cut in pieces. A file that cannot be read gets the error
`voxid.audio.load_audio` would give it (one line naming the file and the cause).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from voxid.audio import AudioError, NonFiniteAudio, SilentAudio, load_audio
from voxid.inference.backends import _as_waveform

__all__ = ["blocks"]


def _mono(block: np.ndarray) -> np.ndarray:
    block = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block
    return np.ascontiguousarray(block, dtype=np.float32)


def _sf_blocks(src: Any, sr: int, frames: int) -> Iterator[np.ndarray]:
    with sf.SoundFile(src) as f:
        rate = int(f.samplerate)
        stream = None if rate == sr else soxr.ResampleStream(rate, sr, 1, "float32", "HQ")
        step = max(1024, frames * rate // sr)
        for data in f.blocks(blocksize=step, dtype="float32", always_2d=True):
            mono = _mono(data)
            yield mono if stream is None else stream.resample_chunk(mono)
        if stream is not None:
            yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


def _av_blocks(src: Any, sr: int, frames: int) -> Iterator[np.ndarray]:
    import av

    with av.open(src, mode="r") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        pending: list[np.ndarray] = []
        size = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                pending.append(out.to_ndarray().reshape(-1).astype(np.float32))
                size += pending[-1].size
            if size >= frames:
                yield np.concatenate(pending)
                pending, size = [], 0
        for out in resampler.resample(None):
            pending.append(out.to_ndarray().reshape(-1).astype(np.float32))
        if pending:
            yield np.concatenate(pending)


def _checked(pieces: Iterator[np.ndarray], label: str, block: int) -> Iterator[np.ndarray]:
    """Regroup decoded pieces into blocks of `block` samples, checking them as they pass."""
    buf: list[np.ndarray] = []
    size = total = 0
    nonzero = False
    for piece in pieces:
        if not np.isfinite(piece).all():
            raise NonFiniteAudio(f"{label}: contains NaN or infinite samples")
        nonzero = nonzero or bool(np.any(piece))
        buf.append(piece)
        size += piece.size
        while size >= block:
            whole = np.concatenate(buf)
            yield whole[:block]
            buf, size = [whole[block:]], whole.size - block
            total += block
    rest = np.concatenate(buf) if buf else np.zeros(0, np.float32)
    if total + rest.size and not nonzero:
        raise SilentAudio(f"{label}: all samples are zero (digital silence)")
    if rest.size:
        yield rest


def blocks(
    audio: str | os.PathLike | bytes | np.ndarray,
    sr: int,
    block_s: float = 60.0,
    *,
    source_sr: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """`(offset, samples)` blocks of about `block_s` seconds of mono audio at `sr` Hz.

    `audio`: a path, the file's bytes, or an array (then `source_sr` is its rate).

    >>> x = np.sin(np.arange(25000) / 3.0).astype(np.float32)
    >>> [(o, b.size) for o, b in blocks(x, 10000, 1.0, source_sr=10000)]
    [(0, 10000), (10000, 10000), (20000, 5000)]
    """
    block = max(1, round(block_s * sr))
    if isinstance(audio, np.ndarray):
        wav = _as_waveform(audio, source_sr, sr)
        for start in range(0, wav.size, block):
            yield start, wav[start : start + block]
        return
    if isinstance(audio, (bytes, bytearray)):
        label = "audio bytes"
        src: Any = io.BytesIO(bytes(audio))
        if not audio:
            load_audio(bytes(audio), sr=sr)  # raises the usual EmptyAudio
    else:
        label = str(audio)
        path = Path(audio)
        if not path.is_file() or path.stat().st_size == 0:
            load_audio(path, sr=sr)  # raises the usual one-line AudioError
        src = str(path)
    try:
        with sf.SoundFile(src):
            pass
        reader = _sf_blocks
    except Exception:
        reader = _av_blocks
        if isinstance(src, io.BytesIO):
            src.seek(0)
    offset = 0
    try:
        for piece in _checked(reader(src, sr, block), label, block):
            yield offset, piece
            offset += piece.size
    except AudioError:
        raise
    except Exception:
        # Not decodable after all: the whole-file decoder words the error as everywhere.
        load_audio(audio if isinstance(audio, bytes) else Path(audio), sr=sr, max_seconds=None)
        raise
    if offset == 0:
        load_audio(audio if isinstance(audio, bytes) else Path(audio), sr=sr, max_seconds=None)
