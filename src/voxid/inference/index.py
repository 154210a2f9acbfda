"""The enrolled speakers in memory: centroids, names and AS-norm statistics, searched
without a database read, kept in step with the registry by its change counter.

`SpeakerIndex.sync(registry)` asks the registry for its `(instance, generation)` (SQLite:
`PRAGMA data_version`, no table read when nothing changed; PostgreSQL: one indexed row)
and, when it moved, applies only the speakers written or removed since. Search is exact
(one matrix product) up to `EXACT_LIMIT` speakers; above it, when faiss is installed, an
inverted-file index (faiss IVF, 8-bit codes) proposes `ANN_POOL` candidates per query,
which are then scored exactly, so every score it reports is the exact one and only a
missed candidate can differ (recall@1 against exact search: bench/bench_registry.py).

With a cohort (a model after `voxid fit-lda --cohort`), each centroid's AS-norm mean and
deviation against the cohort is computed once when it enters the index, so a query costs
one matrix product whatever the cohort size; the scores equal `voxid.inference.scoring.as_norm`.

>>> import numpy as np
>>> idx = SpeakerIndex()
>>> idx.upsert(["alice", "bob"], np.eye(3, dtype=np.float32)[:2])
>>> [(name, round(score, 3)) for name, score, _ in idx.top(np.array([[0.8, 0.6, 0.0]]), 1)]
[('alice', 0.8)]
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from voxid.inference.registry import BaseRegistry, Changes
from voxid.inference.scoring import DEFAULT_TOP_N, cohort_stats
from voxid.numeric import normalize_rows

#: Up to this many speakers, search is exact: one (K, N) product stays fast enough (timings
#: in BENCHMARKS.md, registry); above it the faiss index takes over.
EXACT_LIMIT = 200_000
#: Candidates the approximate index proposes per query for exact scoring.
ANN_POOL = 100
#: Share of the inverted lists visited per query: a half kept recall@1 at 1.0 against exact
#: search on clustered synthetic voices where a quarter gave 0.95 (tests/test_index.py).
NPROBE_SHARE = 0.5
#: Rows per block when computing cohort statistics (bounded memory: 20k x cohort floats).
_STATS_ROWS = 20_000


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:  # optional: exact search meets the targets to 1M, only slower
        return None
    return faiss


class SpeakerIndex:
    """Enrolled centroids in memory, by slot; thread-safe (one lock around changes and
    searches).

    Arguments:
        cohort: the model's AS-norm cohort `(C, D)`, or None for plain cosine scores.
        top_n: cohort scores per side, as `voxid.inference.scoring.as_norm`.
        exact_limit: above this many speakers, use the approximate index (if faiss is
            installed).
        nprobe: inverted lists visited per query (default: `NPROBE_SHARE` of them).
    """

    def __init__(
        self,
        cohort: np.ndarray | None = None,
        *,
        top_n: int = DEFAULT_TOP_N,
        exact_limit: int = EXACT_LIMIT,
        nprobe: int | None = None,
    ) -> None:
        self.cohort = None if cohort is None else normalize_rows(cohort)
        self.top_n = top_n
        self.exact_limit = exact_limit
        self.nprobe = nprobe
        self.token: tuple[str, int] | None = None
        self.lock = threading.RLock()
        self._reset(0)

    def _reset(self, dim: int) -> None:
        self.dim = dim
        self._vecs = np.zeros((0, dim), np.float32)
        self._mu = np.zeros(0, np.float64)
        self._sd = np.ones(0, np.float64)
        self._alive = np.zeros(0, bool)
        self._names: list[str | None] = []
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._ann: Any = None
        self._ann_size = 0

    # -- keeping in step ---------------------------------------------------------------
    def sync(self, registry: BaseRegistry) -> bool:
        """Bring the index up to date with `registry`; True when anything changed."""
        with self.lock:
            token = registry.generation()
            if token == self.token:
                return False
            self.apply(registry.changes(self.token))
            return True

    def apply(self, changes: Changes) -> None:
        """Apply a registry's `Changes` (all speakers when `changes.full`)."""
        with self.lock:
            if changes.full:
                self._reset(changes.centroids.shape[1] if len(changes.names) else 0)
            self.remove(changes.removed)
            if changes.names:
                self.upsert(changes.names, changes.centroids)
            self.token = (changes.instance, changes.generation)

    def _stats(self, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.cohort is None:
            return np.zeros(len(vecs)), np.ones(len(vecs))
        parts = [
            cohort_stats(vecs[i : i + _STATS_ROWS], self.cohort, self.top_n)
            for i in range(0, len(vecs), _STATS_ROWS)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def upsert(self, names: Sequence[str], centroids: np.ndarray) -> None:
        """Add or replace speakers `names` with their centroids `(M, D)`."""
        vecs = np.ascontiguousarray(centroids, dtype=np.float32)
        if not len(names):
            return
        with self.lock:
            if not len(self) and self.dim != vecs.shape[1]:
                self._reset(vecs.shape[1])  # empty: the first speakers set the size
            if vecs.shape[1] != self.dim:
                raise ValueError(f"centroids of size {vecs.shape[1]}, the index holds {self.dim}")
            slots = np.empty(len(names), np.int64)
            replaced = []
            for i, name in enumerate(names):
                slot = self._slot.get(name)
                if slot is not None:
                    replaced.append(slot)
                elif self._free:
                    slot = self._free.pop()
                else:
                    slot = len(self._names)
                    self._names.append(None)
                slots[i] = slot
                self._slot[name], self._names[slot] = slot, name
            self._grow(len(self._names))
            mu, sd = self._stats(vecs)
            self._vecs[slots], self._mu[slots], self._sd[slots] = vecs, mu, sd
            self._alive[slots] = True
            if self._ann is not None:
                if replaced:
                    self._ann.remove_ids(np.asarray(replaced, np.int64))
                self._ann.add_with_ids(vecs, slots)
            self._maybe_build_ann()

    def _grow(self, size: int) -> None:
        cap = len(self._vecs)
        if size <= cap:
            return
        # Geometric growth: appends cost amortised O(1), not a copy of the matrix each.
        new = max(size, int(cap * 1.5) + 1024)
        for attr, fill in (("_vecs", 0.0), ("_mu", 0.0), ("_sd", 1.0), ("_alive", False)):
            old = getattr(self, attr)
            grown = np.full((new, *old.shape[1:]), fill, old.dtype)
            grown[:cap] = old
            setattr(self, attr, grown)

    def remove(self, names: Sequence[str]) -> None:
        """Forget speakers `names` (names not in the index are ignored)."""
        with self.lock:
            slots = [self._slot.pop(n) for n in names if n in self._slot]
            for s in slots:
                self._names[s] = None
                self._alive[s] = False
                self._free.append(s)
            if slots and self._ann is not None:
                self._ann.remove_ids(np.asarray(slots, np.int64))

    def _maybe_build_ann(self) -> None:
        n = len(self)
        faiss = _faiss()
        if faiss is None or n <= self.exact_limit:
            return
        if self._ann is not None and n < 4 * self._ann_size:
            return  # trained on a quarter or more of today's speakers: still representative
        # Lists of about sqrt(N) speakers; trained on a sample (k-means cost grows with it).
        nlist = max(16, int(math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(self.dim)
        ann = faiss.IndexIVFScalarQuantizer(
            quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        live = np.flatnonzero(self._alive[: len(self._names)])
        rng = np.random.default_rng(0)
        sample = live[rng.choice(len(live), min(len(live), 40 * nlist), replace=False)]
        ann.train(self._vecs[np.sort(sample)])
        ann.add_with_ids(self._vecs[live], live.astype(np.int64))
        ann.nprobe = self.nprobe or max(1, int(nlist * NPROBE_SHARE))
        # The quantizer's Python object must live as long as the index that uses it.
        self._ann, self._ann_size, self._quantizer = ann, n, quantizer

    # -- reading -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, name: object) -> bool:
        return name in self._slot

    @property
    def approximate(self) -> bool:
        """Whether searches go through the approximate index."""
        return self._ann is not None and len(self) > self.exact_limit

    def get(self, name: str) -> np.ndarray | None:
        """The centroid of `name`, or None if it is not enrolled."""
        with self.lock:
            slot = self._slot.get(name)
            return None if slot is None else self._vecs[slot].copy()

    def names(self) -> list[str]:
        """Enrolled names, sorted."""
        with self.lock:
            return sorted(self._slot)

    def _score(self, samples: np.ndarray, slots: np.ndarray | slice) -> np.ndarray:
        """Scores `(K, M)` of query samples against the centroids at `slots`: cosine, or
        AS-normed as `voxid.inference.scoring.as_norm` with the cached centroid statistics."""
        raw = samples @ self._vecs[slots].T
        if self.cohort is None:
            return raw
        mu_q, sd_q = cohort_stats(samples, self.cohort, self.top_n)
        left = (raw - mu_q[:, None]) / np.maximum(sd_q, 1e-6)[:, None]
        right = (raw - self._mu[slots][None]) / np.maximum(self._sd[slots], 1e-6)[None]
        scores: np.ndarray = 0.5 * (left + right)
        return scores

    def top(self, samples: np.ndarray, k: int) -> list[tuple[str, float, float]]:
        """The best `k` speakers for query samples `(K, D)` by mean score over the samples,
        as `(name, mean, std)`, best first (ties by name); every speaker tied with the k-th
        is included, so merging with other candidates ranks exactly as one full sort."""
        samples = np.atleast_2d(np.asarray(samples, np.float32))
        with self.lock:
            if not len(self):
                return []
            slots: np.ndarray | slice
            if self.approximate:
                query = normalize_rows(samples.mean(axis=0, keepdims=True))
                pool = max(ANN_POOL, 4 * k)
                _, ids = self._ann.search(query, min(pool, len(self)))
                slots = np.unique(ids[ids >= 0])
            else:
                # Every row in place (a slice, not a copy of the matrix); freed slots are
                # masked out below.
                slots = slice(0, len(self._names))
            scores = self._score(samples, slots)
            mean, std = scores.mean(axis=0), scores.std(axis=0)
            if isinstance(slots, slice):
                mean[~self._alive[slots]] = -np.inf
                slots = np.arange(len(self._names))
            if len(slots) > k:
                kth = -np.partition(-mean, k - 1)[k - 1]
                keep = np.flatnonzero(mean >= kth)
            else:
                keep = np.arange(len(slots))
            keep = keep[np.isfinite(mean[keep])]
            out = [(self._names[slots[i]], float(mean[i]), float(std[i])) for i in keep]
        out.sort(key=lambda c: (-c[1], c[0]))
        return out

    def score(self, samples: np.ndarray, name: str) -> np.ndarray | None:
        """Scores `(K,)` of query samples against speaker `name`, or None if not enrolled."""
        samples = np.atleast_2d(np.asarray(samples, np.float32))
        with self.lock:
            slot = self._slot.get(name)
            return None if slot is None else self._score(samples, np.array([slot]))[:, 0]

    def memory_bytes(self) -> int:
        """Bytes held by the centroid matrix, statistics and approximate index."""
        size = self._vecs.nbytes + self._mu.nbytes + self._sd.nbytes + self._alive.nbytes
        if self._ann is not None:
            size += self._ann.sa_code_size() * self._ann.ntotal + 8 * self._ann.ntotal
            size += self._ann.nlist * self.dim * 4
        return size
