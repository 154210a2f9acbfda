"""Clustering window embeddings into speakers, the speaker count known or not.

Two methods on the cosine similarities of unit embeddings:
- `spectral`: p-pruned affinity, unnormalised Laplacian, the speaker count from the largest
  eigengap (as 3D-Speaker and the "spectral clustering with eigengap" recipes do), k-means
  on the leading eigenvectors;
- `ahc`: average-linkage agglomerative clustering, cut at a calibrated cosine distance.
Then clusters whose centroids are closer than `merge_cosine` are merged and clusters of
fewer than `min_size` windows are given to the nearest other cluster: a turn too short to
fill two windows is more likely a stray window than a new speaker.

The speaker count of `spectral` can come from one eigengap (`count_neighbours=None`) or,
the default of the pipeline, from `estimate_speakers`: the rounded mean of the eigengap
counts of several affinities (neighbour counts, centred or not, unnormalised and normalised
Laplacians) of the windows and of longer windows of the same recording. One eigengap of
2-s windows of the base model under-counts (a quieter speaker's windows join a louder
one's); each variant errs on a different recording, and their mean is right more often.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from voxid.errors import ConfigError, require_positive
from voxid.numeric import normalize_rows

__all__ = ["METHODS", "cluster_embeddings", "estimate_speakers"]

METHODS = ("spectral", "ahc")
#: The fewest neighbours a row of the spectral affinity keeps (short recordings).
MIN_NEIGHBOURS = 10


def _pruned(sim: np.ndarray, keep: int) -> np.ndarray:
    """`sim` keeping the `keep` largest entries of each row, symmetrised, diagonal zero."""
    n = len(sim)
    if keep < n:
        cut = np.partition(sim, n - keep, axis=1)[:, n - keep][:, None]
        sim = np.where(sim >= cut, sim, 0.0)
    sim = np.clip(0.5 * (sim + sim.T), 0.0, None)
    np.fill_diagonal(sim, 0.0)
    return sim


def _laplacian_eigen(sim: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and vectors of the Laplacian of `sim` with `keep` neighbours a row."""
    from scipy.linalg import eigh

    sim = _pruned(sim, keep)
    return eigh(np.diag(sim.sum(axis=1)) - sim)


def _eigengap_count(x: np.ndarray, keep: int, max_k: int, normalised: bool, center: bool) -> int:
    """The speaker count of one affinity: where the Laplacian's eigenvalues jump most."""
    from scipy.linalg import eigh

    if center:
        x = normalize_rows(x - x.mean(axis=0), None)
    sim = _pruned(x @ x.T, keep)
    deg = sim.sum(axis=1)
    if normalised:
        inv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
        lap = np.eye(len(x)) - inv[:, None] * sim * inv[None]
    else:
        lap = np.diag(deg) - sim
    upto = min(max_k, len(x) - 1)
    vals = eigh(lap, eigvals_only=True, subset_by_index=[0, upto])
    return int(np.argmax(np.diff(vals))) + 1 if upto >= 1 else 1


def estimate_speakers(
    embedding_sets: list[np.ndarray],
    max_speakers: int = 8,
    neighbours: tuple[int, ...] = (8, 10, 12, 16),
    pval: float = 0.05,
    trim: float = 0.0,
) -> int:
    """The speaker count of a recording: the rounded mean of the eigengap counts of every
    set of unit embeddings in `embedding_sets` (e.g. 2-s and 3-s windows) x neighbours a
    row (at least `pval` of the windows) x centred or not x unnormalised or normalised
    Laplacian, the `trim` fraction of the lowest and of the highest counts dropped first.
    Sets of fewer than 3 windows are skipped; none left: 1.

    >>> rng = np.random.default_rng(0)
    >>> c = rng.normal(size=(3, 16))
    >>> x = normalize_rows(np.repeat(c, 20, axis=0) + 0.2 * rng.normal(size=(60, 16)), None)
    >>> estimate_speakers([x])
    3
    """
    counts = []
    for x in embedding_sets:
        x = normalize_rows(x, np.float64)
        if len(x) < 3:
            continue
        for nb in neighbours:
            keep = max(nb, int(np.ceil(pval * len(x))))
            for normalised in (False, True):
                for center in (False, True):
                    counts.append(_eigengap_count(x, keep, max_speakers, normalised, center))
    if not counts:
        return 1
    cut = int(trim * len(counts))
    kept = np.sort(counts)[cut : len(counts) - cut]
    return max(1, min(max_speakers, int(np.floor(np.mean(kept) + 0.5))))


def _spectral(
    x: np.ndarray,
    k: int | None,
    max_k: int,
    pval: float | None,
    extra: int = 0,
    neighbours: int = MIN_NEIGHBOURS,
) -> np.ndarray:
    """Spectral clustering; `pval=None` picks the pruning as NME-SC does (Park et al.
    2020): the neighbour count whose largest normalised eigengap is widest for its size."""
    from sklearn.cluster import KMeans

    n = len(x)
    sim = x @ x.T
    upto = min(max_k, n - 1)
    if pval is None:
        best: tuple[float, np.ndarray, np.ndarray] | None = None
        for keep in sorted({max(2, round(f * n)) for f in np.linspace(0.02, 0.25, 12)}):
            vals, vecs = _laplacian_eigen(sim, keep)
            gaps = np.diff(vals[: upto + 1]) / max(vals[-1], 1e-12)
            g = float(gaps.max()) if gaps.size else 0.0
            ratio = (keep / n) / max(g, 1e-12)
            if best is None or ratio < best[0]:
                best = (ratio, vals, vecs)
        assert best is not None  # the loop runs at least once
        _, vals, vecs = best
    else:
        vals, vecs = _laplacian_eigen(sim, max(neighbours, int(np.ceil(pval * n))))
    if k is None:
        gaps = np.diff(vals[: upto + 1])
        k = int(np.argmax(gaps)) + 1 if gaps.size else 1
        k = min(k + extra, upto)  # over-cluster: the score merge below joins the extras
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, int)
    km = KMeans(n_clusters=k, n_init=10, random_state=0)
    return km.fit_predict(vecs[:, :k])


def _ahc(x: np.ndarray, k: int | None, max_k: int, threshold: float) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster, linkage

    z = linkage(x, method="average", metric="cosine")
    if k is not None:
        labels = fcluster(z, t=k, criterion="maxclust")
    else:
        labels = fcluster(z, t=threshold, criterion="distance")
        if labels.max() > max_k:
            labels = fcluster(z, t=max_k, criterion="maxclust")
    return labels - 1


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(-1)


def _centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return normalize_rows(
        np.stack([x[labels == c].mean(axis=0) for c in range(labels.max() + 1)]), None
    )


def _tidy(
    x: np.ndarray, labels: np.ndarray, k: int | None, merge_cosine: float, min_size: int
) -> np.ndarray:
    """Merge near-identical clusters and absorb tiny ones, keeping a requested count."""
    labels = _relabel(labels)
    while labels.max() > 0:
        sizes = np.bincount(labels)
        if k is not None and labels.max() + 1 <= k:
            break
        cents = _centroids(x, labels)
        small = int(np.argmin(sizes))
        sim = cents @ cents.T
        np.fill_diagonal(sim, -np.inf)
        if sizes[small] < min_size:
            target = int(np.argmax(sim[small]))
            labels = _relabel(np.where(labels == small, target, labels))
            continue
        i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
        if sim[i, j] < merge_cosine:
            break
        labels = _relabel(np.where(labels == j, i, labels))
    return labels


def _merge_by_score(
    x: np.ndarray, labels: np.ndarray, pair_score: Callable, threshold: float
) -> np.ndarray:
    """Merge the best-scoring pair of clusters while it passes `threshold`."""
    while labels.max() > 0:
        scores = np.array(pair_score(_centroids(x, labels)), np.float64)
        np.fill_diagonal(scores, -np.inf)
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if scores[i, j] < threshold:
            break
        labels = _relabel(np.where(labels == max(i, j), min(i, j), labels))
    return labels


def cluster_embeddings(
    embeddings: np.ndarray,
    *,
    num_speakers: int | None = None,
    max_speakers: int = 8,
    method: str = "spectral",
    threshold: float = 0.5,
    pval: float | None = None,
    max_spectral: int = 1500,
    center: bool = False,
    refine: int = 0,
    merge_cosine: float = 0.8,
    min_size: int = 2,
    pair_score: Callable[[np.ndarray], np.ndarray] | None = None,
    merge_score: float = np.inf,
    overcluster: int = 0,
    min_neighbours: int = MIN_NEIGHBOURS,
    count_neighbours: tuple[int, ...] | None = None,
    count_embeddings: list[np.ndarray] | None = None,
    count_trim: float = 0.0,
) -> np.ndarray:
    """Cluster labels `(N,)` 0..K-1 for unit embeddings `(N, D)`.

    Arguments:
        num_speakers: the known speaker count (then no count is estimated).
        max_speakers: the most speakers an estimated count may reach.
        method: `spectral` (eigengap count) or `ahc` (stops at cosine distance `threshold`).
        pval: fraction of neighbours kept per row of the spectral affinity (None: chosen
            per recording, NME-SC).
        center: subtract the recording's mean embedding first (what all its windows
            share, room and channel, then weighs less than who speaks).
        pair_score: scores `(K, K)` between unit centroids `(K, D)` (the model's
            verification scores); clusters are merged, most similar pair first, while a
            pair scores at least `merge_score` (a calibrated verification threshold).
        min_neighbours: the fewest neighbours a row of the spectral affinity keeps.
        overcluster: clusters added to the eigengap count before that merge.
        refine: rounds of reassigning every window to its nearest centroid afterwards.
        max_spectral: more windows than this are clustered on an even subsample of this
            many, and every window then joins its nearest centroid (an eigendecomposition
            is cubic in the windows: an hour at a 0.5-s hop is 7,200).
        merge_cosine: clusters whose centroids are at least this similar are merged
            (not below `num_speakers`).
        min_size: clusters of fewer windows are absorbed by their nearest cluster.
        count_neighbours: with `spectral` and the count unknown, estimate it with
            `estimate_speakers` over these neighbour counts (None: the one eigengap of
            the clustering's own affinity).
        count_embeddings: more embedding sets of the same recording (longer windows)
            that `estimate_speakers` counts on too.
        count_trim: the fraction of those counts trimmed at each end (`estimate_speakers`).

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(2, 16))
    >>> x = np.r_[a + 0.1 * rng.normal(size=(20, 16)), b + 0.1 * rng.normal(size=(20, 16))]
    >>> labels = cluster_embeddings(normalize_rows(x, None))
    >>> len(set(labels[:20])), len(set(labels[20:])), bool(labels[0] != labels[-1])
    (1, 1, True)
    """
    if method not in METHODS:
        raise ConfigError(f"method: must be one of {METHODS}, got {method!r}")
    require_positive("num_speakers", num_speakers, integer=True, optional=True)
    require_positive("max_speakers", max_speakers, integer=True)
    x = normalize_rows(embeddings, np.float64)
    if center and len(x) > 2:
        x = normalize_rows(x - x.mean(axis=0), None)
    n = len(x)
    if n == 0:
        return np.zeros(0, int)
    if n == 1:
        return np.zeros(1, int)
    if num_speakers is None and count_neighbours and method == "spectral" and n >= 20:
        sets = [x] + [np.asarray(e) for e in count_embeddings or ()]
        sets = [e[np.linspace(0, len(e) - 1, max_spectral).round().astype(int)]
                if len(e) > max_spectral else e for e in sets]  # fmt: skip
        num_speakers = estimate_speakers(sets, max_speakers, count_neighbours, trim=count_trim)
    k = None if num_speakers is None else min(num_speakers, n)
    if n > max_spectral:
        pick = np.linspace(0, n - 1, max_spectral).round().astype(int)
        sub = cluster_embeddings(
            x[pick], num_speakers=num_speakers, max_speakers=max_speakers, method=method,
            threshold=threshold, pval=pval, merge_cosine=merge_cosine, min_size=min_size,
            refine=refine, pair_score=pair_score, merge_score=merge_score,
            overcluster=overcluster, min_neighbours=min_neighbours,
        )  # fmt: skip
        return _relabel((x @ _centroids(x[pick], sub).T).argmax(axis=1))
    if method == "spectral" and n >= 20:
        labels = _spectral(x, k, max_speakers, pval, overcluster, min_neighbours)
    else:  # too few windows for a stable eigengap
        labels = _ahc(x, k, max_speakers, threshold)
    labels = _tidy(x, labels, k, merge_cosine, min_size if k is None else 1)
    if pair_score is not None and k is None:
        labels = _merge_by_score(x, labels, pair_score, merge_score)
    for _ in range(refine):
        moved = _relabel((x @ _centroids(x, labels).T).argmax(axis=1))
        if moved.max() != labels.max() or np.array_equal(moved, labels):
            break  # converged, or a cluster emptied: keep the count the clustering chose
        labels = moved
    return labels
