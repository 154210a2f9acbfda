"""Knowledge distillation from a pretrained teacher encoder (no Lightning).

A model that hears a few hundred voices learns fewer directions of speaker variation than
one that heard thousands. Resemblyzer's encoder (Apache-2.0, trained on 8,371 speakers)
can lend them: `teacher_targets` embeds every training item of a waveform store with it
once, and a run with `distill_targets: <file>` adds to its AAM-softmax loss
``distill_weight * (1 - cos(W e, t))``: the cosine distance between a linear map of the
student's embedding `e` and the teacher's `t` of the same clip. The student hears the
augmented clip, the teacher heard it clean, so the target also teaches robustness. `W` is
dropped after training: the shipped encoder runs alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxid.errors import ConfigError, DataError
from voxid.io import atomic_write_npz

__all__ = ["TEACHERS", "TargetDataset", "load_targets", "teacher_info", "teacher_targets"]

#: Teachers `teacher_targets` knows, with the PyPI package each needs.
TEACHERS = {"resemblyzer": "resemblyzer"}
_PARTIAL_SECONDS = 1.6  # Resemblyzer's partial utterance: 160 frames of 10 ms


class _Resemblyzer:
    """Resemblyzer's `VoiceEncoder` on batches of short clips (16 kHz)."""

    sample_rate = 16000

    def __init__(self) -> None:
        try:
            from resemblyzer import VoiceEncoder
        except ImportError:
            raise ConfigError(
                "teacher: resemblyzer is not installed (pip install webrtcvad-wheels; "
                "pip install --no-deps resemblyzer)"
            ) from None
        from librosa.filters import mel

        self.encoder = VoiceEncoder("cpu", verbose=False)
        self.dim = 256
        # Resemblyzer's mel spectrogram (librosa's, 25 ms Hann windows every 10 ms, 40
        # bands, power), batched with torch.stft: the same values, much faster
        # (BENCHMARKS.md, base model notes).
        self._mel = torch.from_numpy(mel(sr=self.sample_rate, n_fft=400, n_mels=40)).float()
        self._window = torch.hann_window(400)

    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        from resemblyzer import audio

        size = round(_PARTIAL_SECONDS * self.sample_rate)
        wavs, long = [], []
        for k, clip in enumerate(clips):
            wav = audio.normalize_volume(clip.astype(np.float64), -30, increase_only=True)
            if wav.size > size:
                long.append(k)
                wav = wav[:size]
            # As embed_utterance does for a clip shorter than one partial: zero-padded.
            wavs.append(np.pad(wav, (0, size - wav.size)).astype(np.float32))
        with torch.no_grad():
            spec = torch.stft(torch.from_numpy(np.stack(wavs)), 400, 160, window=self._window,
                              center=True, pad_mode="constant", return_complex=True)  # fmt: skip
            mels = (self._mel @ spec.abs().pow(2)).transpose(1, 2)
            out = self.encoder(mels).cpu().numpy()
        for k in long:  # longer clips: the teacher's own averaging over partials
            out[k] = self.encoder.embed_utterance(clips[k].astype(np.float32))
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def teacher_targets(
    store: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    teacher: str = "resemblyzer",
    split: str = "train",
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Embed every `split` item of a waveform store with `teacher`; write the targets.

    The file (default ``<store>.<teacher>.npz``) holds ``embeddings`` (float16, one row per
    store item, zeros outside `split`), ``mask`` and the store's ``fingerprint``, so a run
    refuses targets made for other data. Written to a temporary file, then renamed.
    """
    from voxid.data.store import StoreInfo

    if teacher not in TEACHERS:
        raise ConfigError(f"teacher: unknown {teacher!r}; choose from {', '.join(TEACHERS)}")
    store = Path(store)
    info = StoreInfo.open(store)
    if info.feature_config.kind != "waveform":
        raise DataError(f"{store}: teachers hear waveforms; prepare it with --features waveform")
    model = _Resemblyzer()
    if int(info.feature_config.sample_rate) != model.sample_rate:
        raise DataError(f"{store}: {teacher} needs 16 kHz waveforms")
    out = Path(out) if out else store.with_name(f"{store.name}.{teacher}.npz")
    chosen = np.flatnonzero(np.asarray(info.items["split"]).astype(str) == split)
    if chosen.size == 0:
        raise DataError(f"{store}: no items in split {split!r}")
    offsets = np.asarray(info.items["offset"])
    lengths = np.asarray(info.items["length"])
    emb = np.zeros((len(info), model.dim), dtype=np.float16)
    import h5py

    with h5py.File(store, "r") as h5:
        data = h5["data"]
        for start in range(0, chosen.size, batch_size):
            rows = chosen[start : start + batch_size]
            clips = [data[offsets[i] : offsets[i] + lengths[i]] for i in rows]
            emb[rows] = model(clips).astype(np.float16)
            if progress is not None:
                progress(min(start + batch_size, chosen.size), chosen.size)
    mask = np.zeros(len(info), dtype=bool)
    mask[chosen] = True
    arrays = {"embeddings": emb, "mask": mask, "fingerprint": np.array(info.fingerprint),
              "teacher": np.array(teacher)}  # fmt: skip
    return atomic_write_npz(out, arrays)


def load_targets(path: str | os.PathLike, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
    """`(embeddings float32, mask)` from a `teacher_targets` file made for this store."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"distill_targets: {path}: no such file (voxid teacher STORE)")
    try:
        with np.load(path, allow_pickle=False) as z:
            made_for = str(z["fingerprint"])
            emb, mask = z["embeddings"].astype(np.float32), z["mask"].astype(bool)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a voxid teacher-targets file ({exc})") from None
    if made_for != fingerprint:
        raise DataError(
            f"{path}: made for another store (fingerprint {made_for[:12]}, the run's "
            f"{fingerprint[:12]}); run voxid teacher on this store again"
        )
    return emb, mask


class TargetDataset(torch.utils.data.Dataset):
    """A training split whose items carry their teacher embedding: `(x, label, target)`.

    Arguments:
        base: a `MappedDataset` (its `base.indices` are store item indices).
        embeddings, mask: from `load_targets`.
    """

    def __init__(self, base: Any, embeddings: np.ndarray, mask: np.ndarray):
        rows = np.asarray(base.base.indices)
        if not mask[rows].all():
            raise DataError(
                f"distill_targets: {int((~mask[rows]).sum())} training items have no teacher "
                "embedding (made for another split?)"
            )
        self.base = base
        self.targets = torch.from_numpy(embeddings[rows])
        self.labels = base.labels
        self.speakers = base.speakers

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        x, y = self.base[index]
        return x, y, self.targets[index]


def teacher_info(path: str | os.PathLike) -> dict[str, Any]:
    """What a targets file says about itself: teacher, items, dimension (for metrics)."""
    with np.load(path, allow_pickle=False) as z:
        return {"teacher": str(z["teacher"]), "items": int(z["mask"].sum()),
                "dim": int(z["embeddings"].shape[1])}  # fmt: skip
