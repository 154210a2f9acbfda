"""A torch Dataset over a voxid HDF5 store, and the collate function for padded batches.

The HDF5 file is opened lazily, once per process: a handle opened before a DataLoader
forks its workers must not be shared with them (HDF5 file handles are not fork-safe), so
each worker opens its own on first use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from voxid.data.corpus import SpeakerSpec
from voxid.data.store import StoreInfo
from voxid.errors import DataError

__all__ = ["StoreDataset", "collate_pad"]


class StoreDataset(Dataset):
    """Items of one split of a store, as `(features, label)` pairs.

    Arguments
    ---------
    path: the `.h5` store written by `voxid prepare`.
    split: a split name, a list of names, or None for every item.
    cache: read the selected items into RAM once (fast epochs for stores that fit).
    speakers: keep only these speakers (names, `SpeakerSpec` strings, or labels).
    include_augmented: keep offline-augmented items and oversampled copies.

    Labels are the store's global labels (`info.speakers[label]` is the name), also when
    `speakers` selects a subset, so a classifier's output size is `len(info.speakers)`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | Sequence[str] | None = "train",
        *,
        cache: bool = False,
        speakers: str | Sequence | None = None,
        include_augmented: bool = True,
    ) -> None:
        self.path = Path(path)
        self.info = StoreInfo.open(self.path)
        table = self.info.items
        keep = np.ones(len(self.info), dtype=bool)
        if split is not None:
            names = [split] if isinstance(split, str) else list(split)
            keep &= np.isin(table["split"], names)
            if not keep.any():
                raise DataError(
                    f"{self.path}: no items in split {split!r} "
                    f"(store has {sorted(self.info.splits)})"
                )
        if speakers is not None:
            keep &= self._speaker_mask(speakers)
        if not include_augmented:
            keep &= (table["augment"] == "") & (table["copy"] == 0)
        self.indices = np.flatnonzero(keep)
        self.items = {k: v[self.indices] for k, v in table.items()}
        self.labels: np.ndarray = self.items["label"].astype(np.int64)
        self._offsets = self.items["offset"]
        self._lengths = self.items["length"]
        self._h5: Any = None  # an h5py.File, opened on first read in each process
        self._pid: int | None = None
        self._cache: list[np.ndarray] | None = self._read_all() if cache else None

    def _speaker_mask(self, speakers) -> np.ndarray:
        if isinstance(speakers, str) or any(isinstance(s, str) for s in speakers):
            spec = SpeakerSpec.parse(speakers)
            wanted = [i for i, s in enumerate(self.info.speakers) if spec.matches(s)]
        else:
            wanted = [int(s) for s in speakers]
        if not wanted:
            raise DataError(f"{self.path}: no speaker matches {speakers!r}")
        return np.isin(self.info.items["label"], wanted)

    def _data(self):
        # Reopen after a fork: the parent's handle belongs to the parent.
        if self._h5 is None or self._pid != os.getpid():
            import h5py

            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5["data"]

    def _read_all(self, window: int = 1 << 22) -> list[np.ndarray]:
        """The selected items, copied into one buffer of their own total length.

        Items are read in offset order, neighbours together in reads of up to `window`
        rows (sequential reads beat many small ones), gaps between far-apart items never
        read: a split scattered over a store (held-out speakers) costs its own size in
        RAM, not the store's.
        """
        if len(self.indices) == 0:
            return []
        data = self._data()
        order = np.argsort(self._offsets, kind="stable")
        starts, lengths = self._offsets[order], self._lengths[order]
        buf = np.empty((int(lengths.sum()), *data.shape[1:]), dtype=data.dtype)
        at = np.concatenate([[0], np.cumsum(lengths)])
        k = 0
        while k < len(order):
            lo, end = int(starts[k]), k + 1
            while end < len(order) and starts[end] + lengths[end] - lo <= window:
                end += 1
            block = data[lo : int(starts[end - 1] + lengths[end - 1])]
            for j in range(k, end):
                o, n = int(starts[j]) - lo, int(lengths[j])
                buf[at[j] : at[j] + n] = block[o : o + n]
            k = end
        items: list[np.ndarray] = [buf[0:0]] * len(order)
        for j, i in enumerate(order):
            items[i] = buf[at[j] : at[j + 1]]
        return items

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._cache is not None:
            x = self._cache[i]
        else:
            o, n = int(self._offsets[i]), int(self._lengths[i])
            x = self._data()[o : o + n]
        return torch.from_numpy(np.array(x, dtype=np.float32)), int(self.labels[i])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"] = None  # never pickle an open file (spawned DataLoader workers)
        return state

    def close(self) -> None:
        """Close this process's HDF5 handle (reopened on the next read)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None


def collate_pad(batch: Sequence[tuple]):
    """Stack `(x, label)` pairs, zero-padding axis 0 (time) to the longest item.

    Returns `(x (B, T, ...), lengths (B,), labels (B,))`; items `(x, label, target)` (a
    fixed-size tensor each, e.g. a teacher embedding) add `targets (B, ...)`.

    >>> x, n, y = collate_pad([(torch.ones(3, 2), 0), (torch.ones(5, 2), 1)])
    >>> tuple(x.shape), n.tolist(), y.tolist(), x[0, 3:].abs().sum().item()
    ((2, 5, 2), [3, 5], [0, 1], 0.0)
    """
    if not batch:
        raise DataError("collate_pad: empty batch")
    xs = [b[0] for b in batch]
    lengths = torch.tensor([x.shape[0] for x in xs], dtype=torch.long)
    out = xs[0].new_zeros((len(xs), int(lengths.max()), *xs[0].shape[1:]))
    for k, x in enumerate(xs):
        out[k, : x.shape[0]] = x
    labels = torch.tensor([int(b[1]) for b in batch], dtype=torch.long)
    if len(batch[0]) > 2:
        return out, lengths, labels, torch.stack([b[2] for b in batch])
    return out, lengths, labels
