"""The HDF5 feature store: layout and metadata (`StoreInfo`); `voxid.data.prepare` writes it.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxid.errors import DataError
from voxid.features import FeatureConfig

__all__ = ["FORMAT_VERSION", "StoreInfo"]

FORMAT_VERSION = 1


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
