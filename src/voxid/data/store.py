"""The HDF5 feature store: layout, metadata (`StoreInfo`) and the settings it was made with.

Layout (format version 1)::

    data       float32 (total, *tail)   every item's features, concatenated on axis 0
    offsets    int64 (N,)               where item i starts in `data`
    lengths    int64 (N,)               how many rows it has ((T, F) features: T frames)
    items/     label int32, split, source, augment (str), chunk_index int32,
               seconds float32 (audio in the item), copy int16 (oversampled copies > 0)
    extra/     one str dataset per extra manifest column (gender, take, ...)
    attrs      JSON: speakers, feature_config, audio_config, fingerprint, members, report

Oversampled copies share their source's rows (same offset), so balancing costs no space.
`data` is chunked in blocks of about 256 KiB with LZF: fast to read at random, and the
blocks hold several items, so a training epoch touches each block a few times only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxid.errors import ConfigError, DataError
from voxid.features import FeatureConfig
from voxid.vad import ChunkConfig, VadConfig

__all__ = ["FORMAT_VERSION", "PrepareConfig", "PrepareReport", "StoreInfo", "prepare"]

FORMAT_VERSION = 1


@dataclass
class PrepareConfig:
    """Settings of `prepare`: features, VAD, chunking, offline augmentation, balancing.

    Arguments
    ---------
    feature: a `voxid.features.FeatureConfig` (its sample rate is the store's).
    vad: a `voxid.vad.VadConfig` (`enabled=False` keeps silences).
    chunk: a `voxid.vad.ChunkConfig`, or None to store whole files (image recipe).
    augment: names from `voxid.augment.OFFLINE_AUGMENTATIONS`, applied to training files.
    speaker_augment: augmentations whose copies become new speakers, ``<speaker>@<name>``
        (speed perturbation changes the voice: WeSpeaker's and 3D-Speaker's speaker
        augmentation), applied to training files.
    noise_dir: recordings for the `noise_real` augmentation.
    oversample: copy training items of minority speakers (or members) until balanced.
    members: speaker spec of the members (authentication); balances members vs others.
    max_seconds: recordings longer than this are skipped (None: no limit).

    >>> cfg = PrepareConfig(chunk=ChunkConfig(seconds=2.0))
    >>> cfg.audio_config()["chunk"]["seconds"], cfg.feature.kind
    (2.0, 'logmel')
    """

    feature: FeatureConfig = field(default_factory=FeatureConfig.logmel)
    vad: VadConfig = field(default_factory=VadConfig)
    chunk: ChunkConfig | None = field(default_factory=ChunkConfig)
    normalize: str | None = None
    augment: tuple[str, ...] = ()
    speaker_augment: tuple[str, ...] = ()
    noise_dir: str | None = None
    oversample: bool = False
    members: str | None = None
    seed: int = 0
    max_seconds: float | None = 600.0
    min_speech_seconds: float = 0.1

    def __post_init__(self) -> None:
        # Bad VAD or chunk parameters must fail here, once, not as a skip of every file.
        probe = np.ones(1600, dtype=np.float32)
        self.vad.segments(probe, 16000)
        if self.chunk is not None:
            self.chunk.apply(probe, 16000)
        self.augment = tuple(self.augment)
        self.speaker_augment = tuple(self.speaker_augment)
        both = set(self.augment) & set(self.speaker_augment)
        if both:
            raise ConfigError(
                f"speaker_augment: {sorted(both)[0]!r} is also in augment; a copy is either the "
                "same speaker or a new one"
            )
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds: must be positive or None, got {self.max_seconds!r}")
        if self.normalize not in (None, "peak", "rms"):
            raise ConfigError(f"normalize: must be None, 'peak' or 'rms', got {self.normalize!r}")
        if self.augment or self.speaker_augment:
            from voxid.augment import OFFLINE_AUGMENTATIONS

            asked = (*self.augment, *self.speaker_augment)
            unknown = [a for a in asked if a not in OFFLINE_AUGMENTATIONS]
            if unknown:
                raise ConfigError(
                    f"augment: unknown augmentation {unknown[0]!r}; choose from "
                    f"{', '.join(sorted(OFFLINE_AUGMENTATIONS))}"
                )
            if "noise_real" in asked and not self.noise_dir:
                raise ConfigError("augment: 'noise_real' needs --noise-dir")

    def audio_config(self) -> dict[str, Any]:
        """The audio side of the settings, as stored (and copied into checkpoints)."""
        return {
            "sample_rate": int(self.feature.sample_rate),
            "normalize": self.normalize,
            "vad": self.vad.to_dict(),
            "chunk": self.chunk.to_dict() if self.chunk is not None else None,
        }

    def worker_settings(self) -> dict[str, Any]:
        """Plain-type settings for the worker processes."""
        return {
            "feature": self.feature.to_dict(),
            "normalize": self.normalize,
            "vad": self.vad.to_dict(),
            "chunk": self.chunk.to_dict() if self.chunk is not None else None,
            "noise_dir": str(self.noise_dir) if self.noise_dir else None,
            "seed": int(self.seed),
            "max_seconds": self.max_seconds,
            "min_samples": max(1, round(self.min_speech_seconds * self.feature.sample_rate)),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything that shapes the store's content (goes into the fingerprint)."""
        return {
            **self.worker_settings(),
            "augment": list(self.augment),
            **({"speaker_augment": list(self.speaker_augment)} if self.speaker_augment else {}),
            "oversample": self.oversample,
            "members": self.members,
        }


@dataclass
class PrepareReport:
    """What `prepare` did: counts, hours of audio, and each skipped input with its reason."""

    out_path: Path
    files: int = 0
    files_used: int = 0
    items: int = 0
    items_per_split: dict[str, int] = field(default_factory=dict)
    augmented: int = 0
    oversampled: int = 0
    seconds: float = 0.0
    kept_seconds: float = 0.0
    unassigned: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    elapsed: float = 0.0
    fingerprint: str = ""

    @property
    def hours(self) -> float:
        """Hours of decoded audio in the files used."""
        return self.seconds / 3600.0

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio prepared per second of wall time."""
        return self.seconds / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-type summary (stored in the HDF5 attributes and printed by `--json`)."""
        return {
            "out_path": str(self.out_path),
            "files": self.files,
            "files_used": self.files_used,
            "items": self.items,
            "items_per_split": self.items_per_split,
            "augmented": self.augmented,
            "oversampled": self.oversampled,
            "hours": round(self.hours, 4),
            "kept_hours": round(self.kept_seconds / 3600.0, 4),
            "unassigned": self.unassigned,
            "elapsed_s": round(self.elapsed, 3),
            "realtime_factor": round(self.realtime_factor, 1),
            "fingerprint": self.fingerprint,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def _strings(ds) -> np.ndarray:
    return np.asarray(ds.asstr()[()], dtype=str)


@dataclass
class StoreInfo:
    """A store's metadata and item table (no features are read).

    `items` maps column -> numpy array with one row per item: `offset`, `length`,
    `label`, `split`, `source`, `augment`, `chunk_index`, `seconds`, `copy` and every
    extra manifest column.
    """

    path: Path
    speakers: list[str]
    feature_config: FeatureConfig
    audio_config: dict[str, Any]
    fingerprint: str
    items: dict[str, np.ndarray]
    extra_columns: list[str]
    members: list[str]
    report: dict[str, Any]
    version: int = FORMAT_VERSION

    @classmethod
    def open(cls, path: str | os.PathLike) -> StoreInfo:
        """Read the metadata of the store at `path`; DataError if it is not a voxid store."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: store not found")
        try:
            with h5py.File(path, "r") as f:
                version = int(f.attrs.get("voxid_store", 0))
                if version == 0:
                    raise DataError(f"{path}: not a voxid store")
                if version > FORMAT_VERSION:
                    raise DataError(
                        f"{path}: store format {version} is newer than this "
                        f"voxid reads ({FORMAT_VERSION})"
                    )
                meta = {
                    k: json.loads(f.attrs[k])
                    for k in ("speakers", "feature_config", "audio_config", "members", "report")
                }
                g = f["items"]
                items: dict[str, np.ndarray] = {
                    "offset": f["offsets"][()],
                    "length": f["lengths"][()],
                }
                for k in g:
                    items[k] = _strings(g[k]) if g[k].dtype.kind == "O" else g[k][()]
                extra = sorted(f["extra"]) if "extra" in f else []
                for k in extra:
                    items[k] = _strings(f["extra"][k])
                fingerprint = str(f.attrs["fingerprint"])
        except OSError as exc:
            raise DataError(f"{path}: not a readable HDF5 store ({exc})") from None
        except (KeyError, ValueError) as exc:
            raise DataError(f"{path}: damaged voxid store ({exc})") from None
        return cls(
            path,
            meta["speakers"],
            FeatureConfig.from_dict(meta["feature_config"]),
            meta["audio_config"],
            fingerprint,
            items,
            extra,
            meta["members"],
            meta["report"],
            version,
        )

    def __len__(self) -> int:
        return len(self.items["label"])

    @property
    def splits(self) -> dict[str, int]:
        """Item count per split name."""
        names, counts = np.unique(self.items["split"], return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    def check_compatible(self, feature_config: Any) -> None:
        """Raise DataError unless `feature_config` (FeatureConfig or dict) equals the store's."""
        want = feature_config if isinstance(feature_config, dict) else feature_config.to_dict()
        have = self.feature_config.to_dict()
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            detail = ", ".join(f"{k}={have.get(k)!r} (asked {want.get(k)!r})" for k in diff)
            raise DataError(
                f"{self.path}: store was prepared with other feature settings: {detail}"
            )


def prepare(
    corpus,
    out_path,
    config: PrepareConfig | None = None,
    workers: int = 2,
    progress=None,
    *,
    force: bool = False,
) -> PrepareReport:
    """Decode, VAD, chunk and featurise `corpus` into an HDF5 store at `out_path`.

    Items need a split (see `voxid.data.splits.assign_splits`); files without one are left
    out and counted. Bad files are skipped and listed in the report. The store is written
    to a temporary file next to `out_path` and renamed at the end, so an interrupted run
    leaves neither a half-written store nor a damaged previous one (the temporary files of
    runs killed outright, whose process is gone, are removed by the next run into that
    folder). `progress(done, total)` is called after each file. An existing voxid store
    at `out_path` is replaced; any other existing file raises DataError unless
    `force=True`.
    """
    from voxid.data._write import run_prepare

    return run_prepare(
        corpus, Path(out_path), config or PrepareConfig(), workers, progress, force=force
    )
