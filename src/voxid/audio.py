"""Decode any audio source to float32 mono at a target rate, with typed errors.

soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF and friends; whatever it
cannot read (M4A/AAC, WMA, WebM, ...) goes to PyAV (ffmpeg). Decoding runs block by
block: each block's channels are averaged and its rate converted with a streaming soxr
resampler, so peak memory is the mono output plus one block. Every way the input can be
unusable maps to one `AudioError` subclass whose message names the file and the cause.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from voxid.errors import ConfigError, VoxidError, printable, require_positive

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioDecodeError",
    "AudioError",
    "AudioInfo",
    "AudioNotFound",
    "AudioTooLarge",
    "AudioTooLong",
    "EmptyAudio",
    "NonFiniteAudio",
    "SilentAudio",
    "audio_info",
    "load_audio",
]

#: File suffixes a corpus scan picks up (lower case, with the dot).
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".wma",
     ".webm", ".aif", ".aiff", ".au", ".caf", ".w64", ".amr", ".3gp", ".mka"}
)  # fmt: skip

#: Native sample rates a real recording can have; a header outside them is corrupt (a rate
#: of 2e9 Hz would otherwise resample to nothing and read as "too little speech").
PLAUSIBLE_RATES = (1_000, 768_000)
_RMS_TARGET = 0.1  # -20 dBFS: loud enough for features, leaves headroom for speech peaks
# Leading bytes of formats we know; a file starting with one of them is "corrupt", not "not audio".
_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b".snd", b"caff", b"\x1aE\xdf\xa3",
          b"0&\xb2u", b"#!AMR")  # fmt: skip

Source = str | os.PathLike | bytes | bytearray | BinaryIO


class AudioError(VoxidError):
    """An audio input that cannot be used; the message names the file and the cause.

    Examples
    --------
    >>> try:
    ...     load_audio(b"not audio", name="upload.wav")
    ... except AudioError as exc:
    ...     print(type(exc).__name__)
    AudioDecodeError
    """


class AudioNotFound(AudioError, FileNotFoundError):
    """The audio path does not exist or is not a file."""


class AudioDecodeError(AudioError):
    """Corrupt data, not audio at all, or a format nothing here can decode."""


class EmptyAudio(AudioError):
    """A 0-byte file or a stream that decodes to zero samples."""


class SilentAudio(AudioError):
    """Exact digital silence: every sample is zero."""


class NonFiniteAudio(AudioError):
    """The decoded samples contain NaN or infinity."""


class AudioTooLong(AudioError):
    """Longer than the configured limit (`max_seconds`)."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: duration in seconds, native rate, channel count."""

    duration: float
    sample_rate: int
    channels: int
    frames: int
    format: str


def _describe(source: Source, name: str | None) -> str:
    # Escaped: the label goes into messages printed on terminals (see errors.printable).
    if name:
        return printable(name)
    if isinstance(source, (str, os.PathLike)):
        return printable(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    return printable(getattr(source, "name", None) or "<stream>")


def _read_source(source: Source, label: str) -> tuple[bytes | None, Path | None]:
    """Return (data, None) for in-memory sources or (None, path) for a checked path."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioNotFound(f"{label}: file not found")
        if not path.is_file():
            raise AudioNotFound(f"{label}: not a file")
        suffix = path.suffix.lower()
        if suffix and suffix not in AUDIO_EXTENSIONS:
            raise AudioDecodeError(f"{label}: unknown audio extension '{path.suffix}'")
        if path.stat().st_size == 0:
            raise EmptyAudio(f"{label}: empty file (0 bytes)")
        return None, path
    elif hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise AudioDecodeError(f"{label}: file object must be opened in binary mode")
        data = bytes(data)
    else:
        raise ConfigError(f"source: expected a path, bytes or a binary file object, "
                          f"got {type(source).__name__}")  # fmt: skip
    if not data:
        raise EmptyAudio(f"{label}: empty input (0 bytes)")
    return data, None


def _open(data: bytes | None, path: Path | None):
    return io.BytesIO(data) if data is not None else str(path)


def _head(data: bytes | None, path: Path | None) -> bytes:
    if data is not None:
        return data[:16]
    assert path is not None  # _read_source returns bytes or a path
    with open(path, "rb") as fh:
        return fh.read(16)


def _undecodable(label: str, head: bytes, cause: Exception, src: object) -> AudioDecodeError:
    known = (
        head.startswith(_MAGIC) or head[4:8] == b"ftyp" or head[:2] in (b"\xff\xfb", b"\xff\xf3")
    )
    what = "corrupt or truncated audio" if known else "not a recognised audio format"
    detail = str(cause)
    # libsndfile's "Error opening <repr of what it was given>: " repeats the file (or shows
    # an in-memory buffer's repr, "<_io.BytesIO object at 0x...>"): the label says which.
    opening = f"Error opening {src!r}: "
    if detail.startswith(opening):
        detail = detail[len(opening) :]
    detail = printable(detail.splitlines()[0][:120]) if detail else type(cause).__name__
    return AudioDecodeError(f"{label}: {what} ({detail})")


def _check_rate(label: str, rate: int) -> None:
    lo, hi = PLAUSIBLE_RATES
    if not lo <= rate <= hi:
        raise AudioDecodeError(
            f"{label}: implausible sample rate {rate} Hz in the header (corrupt file?)"
        )


def _too_long(label: str, seconds: float, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise AudioTooLong(f"{label}: {seconds:.1f} s is longer than the {max_seconds:g} s limit")


#: Decoded samples (frames x channels) allowed per second of `max_seconds`: what 192 kHz
#: stereo (or 48 kHz 8-channel) audio holds. A duration limit alone lets a small upload of
#: 8 channels at 384 kHz decode to gigabytes.
SAMPLES_PER_SECOND = 384_000
_BLOCK_SAMPLES = 1 << 19  # per decoded block, all channels together (2 MB of float32)


class AudioTooLarge(AudioTooLong):
    """More samples (frames x channels) than `max_seconds` of 192 kHz stereo would hold."""


def _budget(max_seconds: float | None) -> int | None:
    return None if max_seconds is None else int(max_seconds * SAMPLES_PER_SECOND)


def _check_size(label: str, frames: int, channels: int, rate: int, budget: int | None) -> None:
    if budget is not None and frames * channels > budget:
        raise AudioTooLarge(
            f"{label}: {frames / max(rate, 1):.1f} s x {channels} channels at {rate} Hz "
            f"decodes to {frames * channels * 4 / 1e6:.0f} MB, over the "
            f"{budget * 4 / 1e6:.0f} MB limit ({budget / SAMPLES_PER_SECOND:g} s at 192 kHz stereo)"
        )


class _MonoSink:
    """Mix decoded blocks to mono, check them and resample them as they arrive, so that
    only the output and one block are ever in memory."""

    def __init__(self, label: str, rate: int, sr: int, max_seconds: float | None) -> None:
        self.label, self.rate, self.sr = label, rate, sr
        self.max_seconds = max_seconds
        self.budget = _budget(max_seconds)
        self.limit = None if max_seconds is None else int(max_seconds * rate)
        self.frames = self.samples = 0
        self.nonzero = False
        self.parts: list[np.ndarray] = []
        self.stream: soxr.ResampleStream | None = None

    def add(self, block: np.ndarray) -> None:
        """Take a (frames, channels) float32 block."""
        if block.shape[0] == 0:
            return
        if self.frames == 0:  # first samples: the rate must be sane before soxr sees it
            _check_rate(self.label, self.rate)
            if self.rate != self.sr:
                self.stream = soxr.ResampleStream(self.rate, self.sr, 1, "float32", "HQ")
        self.frames += block.shape[0]
        self.samples += block.size
        # The header lied or had no length: stop as soon as the limits are passed.
        if self.limit is not None and self.frames > self.limit:
            _too_long(self.label, self.frames / self.rate, self.max_seconds)
        _check_size(self.label, self.frames, block.shape[1], self.rate, self.budget)
        if not np.isfinite(block).all():
            raise NonFiniteAudio(f"{self.label}: contains NaN or infinite samples")
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        self.nonzero = self.nonzero or bool(np.any(mono))
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        self.parts.append(mono if self.stream is None else self.stream.resample_chunk(mono))

    def finish(self) -> np.ndarray:
        """The whole mono signal at `sr`."""
        if self.stream is not None:
            self.parts.append(self.stream.resample_chunk(np.zeros(0, np.float32), last=True))
        out = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        self.parts = []
        return out


def _decode_soundfile(src, label: str, sr: int, max_seconds: float | None) -> _MonoSink:
    with sf.SoundFile(src) as f:
        rate, channels = int(f.samplerate), int(f.channels)
        if f.frames > 0 and rate > 0:
            _too_long(label, f.frames / rate, max_seconds)
            _check_size(label, int(f.frames), channels, rate, _budget(max_seconds))
        sink = _MonoSink(label, rate, sr, max_seconds)
        block = max(1024, _BLOCK_SAMPLES // max(channels, 1))
        # read(), not blocks(): blocks() trusts the header's frame count, which is only an
        # estimate for MP3, and yields the unfilled end of its last buffer (uninitialised
        # memory: garbage or NaN samples); read() returns the frames actually decoded.
        while (data := f.read(block, dtype="float32", always_2d=True)).shape[0]:
            sink.add(data)
        return sink


def _decode_pyav(src, label: str, sr: int, max_seconds: float | None) -> _MonoSink:
    import av  # ffmpeg is heavy to load; only formats libsndfile cannot read need it

    with av.open(src, mode="r") as container:
        streams = container.streams.audio
        if not streams:
            raise AudioDecodeError(f"{label}: no audio stream in the container")
        stream = streams[0]
        rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        channels = int(stream.channels or 1)
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            seconds = None
        if seconds is not None:
            _too_long(label, seconds, max_seconds)
            _check_size(label, round(seconds * rate), channels, rate, _budget(max_seconds))
        # Packed float: one (1, frames * channels) array per frame, whatever the codec's own
        # layout (PyAV cannot read more than 8 planes of a planar frame).
        resampler = av.AudioResampler(format="flt", layout=stream.layout, rate=rate)
        sink = _MonoSink(label, rate, sr, max_seconds)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                sink.add(out.to_ndarray().reshape(out.samples, -1))
        for out in resampler.resample(None):
            sink.add(out.to_ndarray().reshape(out.samples, -1))
    return sink


def _decode(data: bytes | None, path: Path | None, label: str, sr: int, max_seconds):
    src = _open(data, path)
    try:
        return _decode_soundfile(src, label, sr, max_seconds)
    except AudioError:
        raise
    except Exception as sf_error:  # libsndfile cannot read it: let ffmpeg try
        first = sf_error
    try:
        sink = _decode_pyav(_open(data, path), label, sr, max_seconds)
    except AudioError:
        raise
    except Exception:
        raise _undecodable(label, _head(data, path), first, src) from None
    if sink.frames == 0:  # ffmpeg "probed" garbage as some format but found nothing in it
        raise _undecodable(label, _head(data, path), first, src)
    return sink


def load_audio(
    source: Source,
    sr: int = 16000,
    *,
    normalize: str | None = None,
    max_seconds: float | None = 600.0,
    name: str | None = None,
) -> np.ndarray:
    """Decode audio to a float32 mono 1-D array at `sr` Hz.

    Parameters
    ----------
    source : str, PathLike, bytes or binary file object
        A path, the file's bytes, or a binary file object.
    sr : int
        Target sample rate; the native rate is converted with soxr (high quality).
    normalize : str, optional
        None (as recorded), ``"peak"`` (max |x| = 1) or ``"rms"`` (RMS = -20 dBFS,
        unclipped).
    max_seconds : float, optional
        Refuse longer audio, and audio with more samples (frames x channels) than this many
        seconds of 192 kHz stereo (`AudioTooLarge`); both are checked from the header
        before decoding when it has one. None disables both limits.
    name : str, optional
        How to call the input in error messages (useful for bytes and streams).

    Returns
    -------
    numpy.ndarray
        Float32 samples ``(n,)``, mono, at `sr`.

    Raises
    ------
    AudioError
        A subclass for missing, corrupt, non-audio, empty, silent, non-finite or too long
        input.

    Examples
    --------
    >>> import io, numpy as np, soundfile as sf
    >>> buf = io.BytesIO()
    >>> sf.write(buf, np.sin(np.arange(8000) / 5.0), 8000, format="WAV")
    >>> load_audio(buf.getvalue(), sr=16000).shape
    (16000,)
    """
    require_positive("sr", sr, integer=True)
    if normalize not in (None, "peak", "rms"):
        raise ConfigError(f"normalize: must be None, 'peak' or 'rms', got {normalize!r}")
    require_positive("max_seconds", max_seconds, seconds=True, optional=True)
    label = _describe(source, name)
    data, path = _read_source(source, label)
    sink = _decode(data, path, label, int(sr), max_seconds)
    if sink.frames == 0:
        raise EmptyAudio(f"{label}: no samples")
    _too_long(label, sink.frames / sink.rate, max_seconds)
    if not sink.nonzero:
        raise SilentAudio(f"{label}: all samples are zero (digital silence)")
    wav = sink.finish()
    if normalize == "peak":
        wav /= np.abs(wav).max()
    elif normalize == "rms":
        wav *= _RMS_TARGET / float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    return wav


def audio_info(source: Source, *, name: str | None = None) -> AudioInfo:
    """Read duration, rate and channels from the header without decoding the samples.

    >>> import io, numpy as np, soundfile as sf
    >>> buf = io.BytesIO()
    >>> sf.write(buf, np.zeros((4000, 2)), 8000, format="FLAC")
    >>> audio_info(buf.getvalue())
    AudioInfo(duration=0.5, sample_rate=8000, channels=2, frames=4000, format='FLAC')
    """
    label = _describe(source, name)
    data, path = _read_source(source, label)
    src = _open(data, path)
    try:
        info = sf.info(src)
    except Exception as sf_error:
        first = sf_error
    else:
        _check_rate(label, int(info.samplerate))
        return AudioInfo(info.frames / info.samplerate, int(info.samplerate), int(info.channels),
                         int(info.frames), str(info.format))  # fmt: skip
    try:
        import av

        with av.open(_open(data, path), mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{label}: no audio stream in the container")
            stream = container.streams.audio[0]
            rate = int(stream.rate or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / av.time_base
            return AudioInfo(duration, rate, int(stream.channels), round(duration * rate),
                             str(container.format.name).upper())  # fmt: skip
    except AudioError:
        raise
    except Exception:
        raise _undecodable(label, _head(data, path), first, src) from None
