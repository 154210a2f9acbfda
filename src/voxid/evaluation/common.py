"""Helpers shared by the evaluation reports: the options (`EvalOptions`, read by `run` and
`verify_run`), grouping chunks into files, atomic writes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxid.errors import ConfigError, require_positive
from voxid.io import atomic_write
from voxid.numeric import normalize_rows


@dataclass
class EvalOptions:
    """What to evaluate and how (the options of ``voxid evaluate``).

    Arguments
    ---------
    split : store split to test (identification / authentication; verification tests).
    speakers : keep only these speakers of the store (names / ranges, e.g.
        ``"00000021-00000030"`` for protocol P-C); None for all.
    verify : verification on embeddings instead of the checkpoint's own mode.
    trials, audio_root : a VoxCeleb-style trial list (verification) and its audio folder.
    enroll_split, test_split : enrolment and test splits of the store (verification).
    n_enroll : files per speaker to enrol with (default: all of the enrol split, or 3
        taken from the test split when there is no enrol split).
    trial_mode : ``"speakers"`` (test items against enrolled speakers) or ``"pairs"``.
    max_trials : pair trials are sampled (seeded) down to this number.
    cohort, cohort_split : AS-norm cohort: another store (its split, default all items),
        or a split of the evaluated store; None for plain cosine scores.
    asnorm_top : cohort scores kept per side (top-N adaptive s-norm).
    mc_samples : Monte-Carlo dropout passes (0: no uncertainty report).
    entropy_threshold : nats above which a sample is flagged (default half of log C).
    """

    split: str = "test"
    speakers: str | None = None
    verify: bool = False
    trials: Path | None = None
    audio_root: Path | None = None
    enroll_split: str | None = None
    test_split: str | None = None
    n_enroll: int | None = None
    trial_mode: str = "speakers"
    max_trials: int = 100_000
    cohort: Path | None = None
    cohort_split: str | None = None
    asnorm_top: int = 100
    mc_samples: int = 0
    entropy_threshold: float | None = None
    batch_size: int = 64
    seed: int = 0

    def check(self) -> None:
        """Raise `ConfigError` for inconsistent options."""
        if self.trial_mode not in ("speakers", "pairs"):
            raise ConfigError(f"trial_mode: 'speakers' or 'pairs', got {self.trial_mode!r}")
        for name in ("max_trials", "asnorm_top", "batch_size"):
            require_positive(name, getattr(self, name), integer=True)
        require_positive("n_enroll", self.n_enroll, integer=True, optional=True)
        if self.mc_samples < 0 or self.mc_samples == 1:
            raise ConfigError(f"mc_samples: 0 (off) or at least 2, got {self.mc_samples}")
        if self.trials is not None and not self.verify:
            raise ConfigError("trials: a trial list is only used with --verify")


def group_sources(sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique source files (sorted) and, for each chunk, the index of its file.

    >>> files, idx = group_sources(np.array(["b.wav", "a.wav", "b.wav"]))
    >>> files.tolist(), idx.tolist()
    (['a.wav', 'b.wav'], [1, 0, 1])
    """
    files, inverse = np.unique(np.asarray(sources), return_inverse=True)
    return files, inverse.reshape(-1)


def mean_by_group(values: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of the rows of `values` per group (a file's score is the mean of its chunks').

    >>> mean_by_group(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 2).tolist()
    [[2.0], [5.0]]
    """
    values = np.asarray(values, dtype=np.float64)
    total = np.zeros((n_groups, *values.shape[1:]))
    np.add.at(total, inverse, values)
    counts = np.bincount(inverse, minlength=n_groups).astype(np.float64)
    return total / counts.reshape(-1, *([1] * (values.ndim - 1)))


def first_by_group(values: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    """The value of the first row of each group (e.g. a file's speaker).

    >>> first_by_group(np.array(["x", "y", "z"]), np.array([1, 1, 0]), 2).tolist()
    ['z', 'x']
    """
    first = np.full(n_groups, -1)
    for row in range(len(inverse) - 1, -1, -1):
        first[inverse[row]] = row
    return np.asarray(values)[first]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, returned in float64 (zero rows stay zero): the one
    normaliser, `voxid.numeric.normalize_rows`, computed in `x`'s own precision.

    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    return normalize_rows(x, None).astype(np.float64)


def write_text(path: Path, text: str) -> Path:
    """Write `text` atomically (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as indented JSON atomically (NaN becomes null: strict JSON for scripts)."""
    return write_text(path, json.dumps(to_json(data), indent=2, allow_nan=False) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write a CSV table atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def to_json(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays converted, NaN/inf become None.

    >>> to_json({"a": np.float32(0.5), "b": [np.nan, np.int64(2)]})
    {'a': 0.5, 'b': [None, 2]}
    """
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
