"""Model backends for the recogniser (torch and onnxruntime) and the audio-to-chunks step.

A backend knows its model's description (`card`, a `voxid.card.ModelCard`: labels,
sample rate, audio settings, threshold), turns a batch of equal-length waveform chunks
`(B, samples)` into L2-normalised embeddings `(B, D)` (or class probabilities for a pure
classifier), and exposes the AAM class-weight bank of the training speakers. The torch
backend lives here; the ONNX one in `voxid.inference.export`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from voxid.audio import AudioError
from voxid.card import ModelCard
from voxid.errors import ConfigError, ModelError, require_positive
from voxid.inference.chunks import (  # re-exported: the one chunking path lives in chunks
    DEFAULT_CHUNK_SECONDS,
    LONG_CHUNKS,
    MAX_BATCH,
    MIN_SPEECH_SECONDS,
    ChunkPolicy,
    NotEnoughSpeech,
    Runner,
    audio_label,
    batched,
    embed_by_length,
    embed_chunks,
    load_waveform,
    speech_chunks,
    torch_runner,
)
from voxid.inference.registry import mean_embedding
from voxid.numeric import normalize_rows, softmax, unproject

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "LONG_CHUNKS",
    "MAX_BATCH",
    "MIN_SPEECH_SECONDS",
    "Backend",
    "NotEnoughSpeech",
    "TorchBackend",
    "embed_batched",
    "prepare_chunks",
    "speech_chunks",
    "usable_cores",
]

#: The old private names of `load_waveform` / `audio_label` (diarization reads audio so).
_as_waveform = load_waveform
_label = audio_label


class Backend:
    """What the recogniser needs from a model; subclasses implement `_embed` / `_logits`."""

    kind = "base"
    supports_mc = False

    def __init__(
        self,
        source: str,
        card: ModelCard,
        fingerprint: str,
        is_embedding_model: bool,
        embedding_dim: int,
        class_weights: np.ndarray | None,
        cohort: np.ndarray | None = None,
    ) -> None:
        self.source, self.card, self.fingerprint = source, card, fingerprint
        #: Training speakers' mean embeddings that scores are AS-normed against, or None.
        self.cohort = None if cohort is None else normalize_rows(np.asarray(cohort, np.float32))
        self.labels: list[str] = list(card.labels)
        self.is_embedding_model = bool(is_embedding_model)
        self.embedding_dim = int(embedding_dim)
        self.class_weights = (
            None if class_weights is None else normalize_rows(np.asarray(class_weights, np.float32))
        )
        #: How recordings become chunks for this model (rate, VAD, chunk length, gain).
        self.policy = ChunkPolicy.from_card(card, source)
        self.sample_rate = self.policy.sample_rate
        self.normalize = self.policy.normalize
        self.vad = self.policy.vad
        self.chunk_seconds = self.policy.seconds

    @property
    def has_class_bank(self) -> bool:
        """True when training speakers can be scored against their AAM class weights (not for
        a binary authentication model, whose classes are "member"/"outsider", not speakers)."""
        return (
            self.is_embedding_model
            and not self.card.is_binary_authenticator
            and self.class_weights is not None
            and len(self.class_weights) == len(self.labels) > 0
        )

    def _batches(self, chunks: np.ndarray, fn: Runner) -> np.ndarray:
        return batched(fn, chunks)

    def embed(self, chunks: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings `(B, D)` of equal-length chunks `(B, samples)`."""
        return embed_chunks(self._embed, chunks)

    def unproject(self, embeddings: np.ndarray) -> np.ndarray | None:
        """The encoder's own unit embeddings `(N, D)` behind this model's projected ones
        (`embed`), or None for a model without an LDA projection that keeps every dimension.
        Diarization counts speakers on them (`voxid.diarization`)."""
        lda = self._projection()
        return None if lda is None else unproject(embeddings, *lda)

    def _projection(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The model's LDA projection `(mean (D,), weight (D, K))`, or None."""
        return None

    def classify(self, chunks: np.ndarray) -> np.ndarray:
        """Class probabilities `(B, C)` (softmax of the head's logits)."""
        logits = self._batches(chunks, self._logits).astype(np.float64)
        return softmax(logits).astype(np.float32)

    def embed_mc(self, chunks: np.ndarray, k: int) -> list[np.ndarray]:
        """`k` Monte-Carlo-dropout passes of `embed`."""
        raise ModelError(f"{self.source}: MC dropout needs the torch backend")

    def classify_mc(self, chunks: np.ndarray, k: int) -> list[np.ndarray]:
        """`k` Monte-Carlo-dropout passes of `classify`."""
        raise ModelError(f"{self.source}: MC dropout needs the torch backend")

    def _embed(self, chunks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _logits(self, chunks: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchBackend(Backend):
    """A `SpeakerModel` from a checkpoint, run under `torch.inference_mode`."""

    kind = "torch"
    supports_mc = True

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu") -> None:
        import torch

        from voxid.checkpoint import load_checkpoint, model_fingerprint, resolve_run
        from voxid.models.base import SpeakerModel

        file = resolve_run(path)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"device: {device!r} is not a torch device ({exc})") from None
        card, model = load_checkpoint(file, map_location=self.device)
        if not isinstance(model, SpeakerModel):
            raise ModelError(
                f"{file}: a {card.model.name or 'GMM'} run has no embeddings; "
                "the recogniser needs a neural speaker model"
            )
        self.model: SpeakerModel = model.eval()
        super().__init__(
            str(file),
            card,
            model_fingerprint(model.state_dict()),
            model.is_embedding_model,
            model.embedding_dim,
            model.class_bank(),
            model.score_cohort(),
        )

    def _run(self, chunks: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = fn(torch.from_numpy(chunks).to(self.device))
        result: np.ndarray = out.float().cpu().numpy()
        return result

    def _embed(self, chunks: np.ndarray) -> np.ndarray:
        # The runner evaluation and calibration embed with too: one forward path.
        return torch_runner(self.model, self.device)(chunks)

    def _logits(self, chunks: np.ndarray) -> np.ndarray:
        return self._run(chunks, lambda x: self.model(self.model.frontend(x)))

    def _projection(self) -> tuple[np.ndarray, np.ndarray] | None:
        proj = self.model.projection
        if proj is None:
            return None
        return proj.mean.detach().cpu().numpy(), proj.weight.detach().cpu().numpy()

    def _mc(self, k: int, fn: Callable[[], np.ndarray]) -> list[np.ndarray]:
        self.model.set_mc_dropout(True)
        try:
            return [fn() for _ in range(k)]
        finally:
            self.model.set_mc_dropout(False)

    def embed_mc(self, chunks: np.ndarray, k: int) -> list[np.ndarray]:
        """`k` embedding passes with dropout active (BatchNorm keeps its running stats)."""
        return self._mc(k, lambda: self.embed(chunks))

    def classify_mc(self, chunks: np.ndarray, k: int) -> list[np.ndarray]:
        """`k` probability passes with dropout active."""
        return self._mc(k, lambda: self.classify(chunks))


def usable_cores(cap: int = 8) -> int:
    """The CPU cores worth running model work on at once (at most `cap`).

    >>> 1 <= usable_cores() <= 8
    True
    """
    return max(1, min(os.cpu_count() or 1, cap))


def prepare_chunks(backend: Backend, audio: Any, sr: int | None = None) -> np.ndarray:
    """Decode `audio` at the backend's rate and cut its speech into training-length chunks
    (`voxid.inference.chunks.ChunkPolicy.prepare` with the backend's policy)."""
    return backend.policy.prepare(audio, sr)


def embed_batched(
    backend: Backend,
    items: list[Any],
    batch_size: int,
    *,
    progress: bool | None = None,
    errors: list[tuple[str, str]] | None = None,
) -> np.ndarray:
    """Embeddings `(N, D)` of many inputs, with chunks of several inputs in one batch."""
    require_positive("batch_size", batch_size, integer=True)
    out = np.full((len(items), backend.embedding_dim), np.nan, dtype=np.float32)
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        embs = embed_by_length(backend.embed, [c for _, c in pending])
        for (idx, _), e in zip(pending, embs, strict=True):
            out[idx] = mean_embedding(e)
        pending.clear()

    from rich.progress import Progress

    show = sys.stderr.isatty() if progress is None else progress
    with Progress(disable=not show, transient=True) as bar:
        task = bar.add_task("embedding", total=len(items))
        for i, item in enumerate(items):
            try:
                pending.append((i, prepare_chunks(backend, item)))
            except AudioError as exc:
                if errors is None:
                    raise
                errors.append((audio_label(item), str(exc)))
            if sum(len(c) for _, c in pending) >= batch_size:
                flush()
            bar.advance(task)
        flush()
    return out
