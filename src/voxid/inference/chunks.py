"""The one audio -> speech -> chunks -> utterance-embedding path.

Every caller that turns a recording into one speaker embedding goes through here: the
recogniser (`Recognizer.embed`, enrolment, identification, `listen`, the server),
evaluation's trial lists and store verification, calibration and LDA fitting. So what
evaluation measures is what the recogniser does, by construction:

1. decode at the model's rate, level untouched (`load_waveform`);
2. find speech with the model's VAD on the level as recorded (its floor is absolute);
3. scale by the whole recording's gain (`normalize`, as the training store was);
4. refuse less than `MIN_SPEECH_SECONDS` of speech (`NotEnoughSpeech`);
5. cut the speech into model-length chunks (`speech_chunks`: end-aligned last window,
   half overlap past `LONG_CHUNKS` windows, short speech repeated to fill one, or to the
   model's `min_input_seconds` where its card sets one);
6. embed the chunks in batches of at most `MAX_BATCH`, L2-normalise each, and take the
   renormalised mean (`embed_utterance`). One utterance's chunks are of one length;
   several utterances' may differ (`min_input_seconds`), so batches group by length.

`ChunkPolicy` holds the settings of steps 1-5, read once from a model's description.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxid.audio import AudioError, EmptyAudio, NonFiniteAudio, SilentAudio, load_audio
from voxid.card import DEFAULT_SAMPLE_RATE, AudioSettings, ModelCard
from voxid.errors import ConfigError, VoxidError
from voxid.inference.registry import mean_embedding
from voxid.numeric import normalize_rows
from voxid.vad import VadConfig

__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "LONG_CHUNKS",
    "MAX_BATCH",
    "MIN_SPEECH_SECONDS",
    "ChunkPolicy",
    "NotEnoughSpeech",
    "embed_by_length",
    "embed_chunks",
    "embed_utterance",
    "load_waveform",
    "speech_chunks",
    "torch_runner",
]

#: Less speech than this (after VAD) is refused: an embedding of it would be mostly noise.
MIN_SPEECH_SECONDS = 0.5
#: Chunk length when the model's description has none.
DEFAULT_CHUNK_SECONDS = 1.0
#: Speech longer than this many chunks is cut into half-overlapping chunks.
LONG_CHUNKS = 4
#: Most chunks per forward pass inside one call, to bound memory on long files.
MAX_BATCH = 64

#: A model's forward pass: equal-length chunks `(B, samples)` float32 -> embeddings `(B, D)`.
Runner = Callable[[np.ndarray], np.ndarray]


class NotEnoughSpeech(AudioError):
    """The audio holds too little speech (after silence removal) to embed reliably."""


@dataclass(frozen=True)
class ChunkPolicy:
    """How a model's recordings become chunks: rate, VAD, chunk length, level scaling.

    `min_input_seconds` (a card's `audio_config.chunk.min_input_seconds`, for a network
    that takes any input length): speech shorter than it is repeated to that length and
    embedded in one pass, not repeated to one chunk. Measured on the base model: short
    speech repeated to 2 s lowered its zero-shot EER on every P-Z set (MODEL_CARD.md).

    >>> card = ModelCard.from_dict({"audio_config": {"chunk": {"seconds": 2.0}}})
    >>> p = ChunkPolicy.from_card(card)
    >>> p.sample_rate, p.seconds, p.normalize, p.vad.method, p.min_input_seconds
    (16000, 2.0, None, 'silero', None)
    """

    sample_rate: int = DEFAULT_SAMPLE_RATE
    vad: VadConfig = field(default_factory=VadConfig)
    seconds: float = DEFAULT_CHUNK_SECONDS
    normalize: str | None = None
    min_input_seconds: float | None = None

    @classmethod
    def from_card(cls, card: ModelCard, source: str = "model") -> ChunkPolicy:
        """The policy a model's card sets (its sample rate, and the training audio's VAD,
        chunk length and gain; defaults for a model not trained from a store)."""
        audio = card.audio or AudioSettings()
        return cls(
            sample_rate=card.sample_rate,
            vad=audio.vad_config(source),
            seconds=audio.chunk_seconds or DEFAULT_CHUNK_SECONDS,
            normalize=audio.normalize,  # as the training audio was
            min_input_seconds=audio.min_input_seconds,
        )

    def describe(self) -> str:
        """The policy as one stable line of JSON: what a registry records beside the model's
        fingerprint, which covers the weights only, so the same weights under another policy
        (chunk length, short-speech rule, gain, VAD) cannot mix their embeddings.

        >>> ChunkPolicy(min_input_seconds=2.0).describe()[:60]
        '{"min_input_seconds":2.0,"normalize":null,"sample_rate":1600'
        """
        fields = {
            "sample_rate": self.sample_rate,
            "seconds": float(self.seconds),
            "min_input_seconds": self.min_input_seconds,
            "normalize": self.normalize,
            "vad": self.vad.to_dict(),
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def chunks(self, wav: np.ndarray, label: str = "audio") -> np.ndarray:
        """`speech_chunks` of a waveform at `sample_rate` with this policy."""
        return speech_chunks(
            wav,
            self.sample_rate,
            self.vad,
            self.seconds,
            label,
            self.normalize,
            min_input_seconds=self.min_input_seconds,
        )

    def prepare(self, audio: Any, sr: int | None = None) -> np.ndarray:
        """Decode `audio` (path, bytes, file, or array with `sr`) and cut its speech."""
        return self.chunks(load_waveform(audio, sr, self.sample_rate), audio_label(audio))


def _normalized(wav: np.ndarray, normalize: str | None) -> np.ndarray:
    if normalize == "peak":
        peak: np.ndarray = wav / np.abs(wav).max()
        return peak
    if normalize == "rms":  # -20 dBFS, as voxid.audio.load_audio
        return wav * (0.1 / float(np.sqrt(np.mean(wav.astype(np.float64) ** 2))))
    return wav


def load_waveform(
    audio: Any, sr: int | None, target_sr: int, normalize: str | None = None
) -> np.ndarray:
    """Mono float32 samples of `audio` at `target_sr` (a path, bytes, a file object, or an
    array whose rate `sr` says); bad input raises one AudioError/ConfigError naming it.

    >>> load_waveform(np.ones(8000), 8000, 8000).dtype
    dtype('float32')
    """
    if isinstance(audio, np.ndarray):
        if sr is None:
            raise ConfigError("sr: needed with a numpy array (its sample rate)")
        wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim == 2:  # (samples, channels), as soundfile reads
            wav = wav.mean(axis=1)
        if wav.ndim != 1:
            raise ConfigError(f"audio: array must be 1-D or (samples, channels), got {audio.shape}")
        if wav.size == 0:
            raise EmptyAudio("audio array: no samples")
        if not np.isfinite(wav).all():
            raise NonFiniteAudio("audio array: contains NaN or infinite samples")
        if not np.any(wav):
            raise SilentAudio("audio array: all samples are zero (digital silence)")
        if int(sr) != target_sr:
            import soxr

            wav = soxr.resample(wav, int(sr), target_sr, quality="HQ").astype(np.float32)
        return _normalized(wav, normalize).astype(np.float32)
    if isinstance(audio, (str, os.PathLike, bytes, bytearray)) or hasattr(audio, "read"):
        return load_audio(
            bytes(audio) if isinstance(audio, bytearray) else audio,
            sr=target_sr,
            normalize=normalize,
        )
    raise ConfigError(f"audio: expected a path, bytes or numpy array, got {type(audio).__name__}")


def audio_label(audio: Any) -> str:
    """How messages name `audio`: its path, or "audio array" / "audio bytes"."""
    if isinstance(audio, (str, os.PathLike)):
        return str(audio)
    return "audio " + ("array" if isinstance(audio, np.ndarray) else "bytes")


def speech_chunks(
    wav: np.ndarray,
    sr: int,
    vad: VadConfig,
    seconds: float,
    label: str = "audio",
    normalize: str | None = None,
    *,
    min_input_seconds: float | None = None,
) -> np.ndarray:
    """Equal-length chunks `(n, samples)` of the speech in `wav`, as the model was trained.

    Silence is removed with `vad`; speech longer than one chunk is cut into windows, the
    last one aligned to the end (no zero padding, which would skew the features); they
    overlap by half for long speech (over `LONG_CHUNKS` windows), where the extra windows
    smooth the average at little relative cost, and do not for short speech, where they
    would almost double the work of a verification. Speech shorter than one window is
    repeated to fill it, or, shorter than `min_input_seconds` (when set), repeated to that
    length and returned as one longer chunk. `normalize` ("peak", "rms" or None) scales
    the speech by the gain of the whole of `wav`, after the VAD has seen the level as
    recorded (its floor is absolute).

    >>> wav = np.sin(np.arange(40000) / 3.0).astype(np.float32)
    >>> speech_chunks(wav, 16000, VadConfig(enabled=False), 1.0).shape  # 2.5 s
    (3, 16000)
    >>> speech_chunks(wav, 16000, VadConfig(enabled=False), 1.0, min_input_seconds=3).shape
    (1, 48000)
    """
    segments = vad.segments(wav, sr)
    if normalize is not None:
        wav = _normalized(wav, normalize)
    speech = np.concatenate([wav[a:b] for a, b in segments] or [wav[:0]])
    if speech.size < MIN_SPEECH_SECONDS * sr:
        raise NotEnoughSpeech(
            f"{label}: only {speech.size / sr:.2f} s of speech after silence "
            f"removal, need at least {MIN_SPEECH_SECONDS} s"
        )
    size = max(1, round(seconds * sr))
    shortest = max(size, round((min_input_seconds or 0) * sr))
    if speech.size <= shortest:
        return np.resize(speech, shortest)[None]
    hop = max(1, size // 2) if speech.size > LONG_CHUNKS * size else size
    starts = list(range(0, speech.size - size + 1, hop))
    if starts[-1] + size < speech.size:
        starts.append(speech.size - size)
    return np.stack([speech[s : s + size] for s in starts])


def embed_by_length(
    embed: Callable[[np.ndarray], np.ndarray], parts: list[np.ndarray]
) -> list[np.ndarray]:
    """`embed` of several utterances' chunk arrays (`parts[i]` is `(n_i, samples_i)`), one
    call per chunk length, the results split back per utterance, in order.

    >>> out = embed_by_length(lambda c: c[:, :1], [np.ones((2, 4)), np.zeros((1, 8))])
    >>> [o.ravel().tolist() for o in out]
    [[1.0, 1.0], [0.0]]
    """
    out: list[np.ndarray] = [np.empty(0)] * len(parts)
    for length in dict.fromkeys(p.shape[1] for p in parts):
        idx = [i for i, p in enumerate(parts) if p.shape[1] == length]
        embs = embed(np.concatenate([parts[i] for i in idx]))
        bounds = np.cumsum([len(parts[i]) for i in idx])[:-1]
        for i, e in zip(idx, np.split(embs, bounds), strict=True):
            out[i] = e
    return out


def batched(run: Runner, chunks: np.ndarray) -> np.ndarray:
    """`run` over `chunks` (float32, contiguous) in batches of at most `MAX_BATCH`."""
    chunks = np.ascontiguousarray(chunks, dtype=np.float32)
    return np.concatenate(
        [run(chunks[i : i + MAX_BATCH]) for i in range(0, len(chunks), MAX_BATCH)]
    )


def embed_chunks(run: Runner, chunks: np.ndarray) -> np.ndarray:
    """L2-normalised embeddings `(B, D)` of equal-length chunks `(B, samples)`."""
    return normalize_rows(batched(run, chunks))


def embed_utterance(run: Runner, chunks: np.ndarray) -> np.ndarray:
    """One embedding `(D,)` of an utterance's chunks: the renormalised mean of the chunks'
    L2-normalised embeddings (every chunk weighs the same)."""
    return mean_embedding(embed_chunks(run, chunks))


def torch_runner(model: Any, device: Any = None) -> Runner:
    """The `Runner` of a torch `SpeakerModel` (`embed_waveform` under inference mode), as
    the recogniser's torch backend runs it. The model is put in eval mode."""
    import torch

    model.eval()
    dev = torch.device("cpu") if device is None else torch.device(device)

    def run(chunks: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model.embed_waveform(torch.from_numpy(chunks).to(dev))
        result: np.ndarray = out.float().cpu().numpy()
        return result

    return run


def embed_paths(
    run: Runner, paths: list[Any], policy: ChunkPolicy
) -> tuple[dict[Any, np.ndarray], list[tuple[str, str]]]:
    """Utterance embeddings of audio files by `embed_utterance`, and the files that could
    not be used as `(path, reason)` (unreadable, too little speech)."""
    out: dict[Any, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    for p in paths:
        try:
            chunks = policy.prepare(p)
        except VoxidError as exc:
            skipped.append((str(p), str(exc)))
            continue
        out[p] = embed_utterance(run, chunks)
    return out, skipped
