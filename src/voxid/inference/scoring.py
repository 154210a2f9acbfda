"""Score normalisation against a cohort: adaptive symmetric normalisation (AS-norm).

AS-norm (Matejka et al. 2017): each side of a trial is compared with a cohort of other
speakers' embeddings; the trial's cosine score is standardised by the mean and standard
deviation of each side's `top_n` closest cohort scores, and the two standardised scores are
averaged. A voice that resembles many people scores high against everyone, and the
normalisation takes that out. Pure numpy: the recogniser and the evaluation share it.
"""

from __future__ import annotations

import numpy as np

from voxid.errors import require_positive
from voxid.numeric import normalize_rows

__all__ = ["DEFAULT_TOP_N", "as_norm", "cohort_stats"]

#: Cohort scores kept per side (the evaluation's `--asnorm-top` default too).
DEFAULT_TOP_N = 100


def cohort_stats(emb: np.ndarray, cohort: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row's `top_n` highest cosine cohort scores.

    >>> mu, sd = cohort_stats(np.eye(2), np.eye(2), top_n=1)
    >>> mu.tolist(), sd.tolist()
    ([1.0, 1.0], [0.0, 0.0])
    """
    require_positive("asnorm top_n", top_n, integer=True)
    s = normalize_rows(emb, np.float64) @ normalize_rows(cohort, np.float64).T
    n = min(int(top_n), s.shape[1])
    top = -np.partition(-s, n - 1, axis=1)[:, :n]
    return top.mean(axis=1), top.std(axis=1)


def _standardise(s: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    z: np.ndarray = (s - mu) / np.maximum(sd, 1e-6)  # a degenerate cohort must not divide by 0
    return z


def as_norm(
    raw: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    cohort: np.ndarray,
    top_n: int = DEFAULT_TOP_N,
) -> np.ndarray:
    """AS-norm of scores between embeddings ``left (L, D)`` and ``right (R, D)``: a matrix
    ``raw (L, R)`` (every left against every right), or paired scores ``raw (P,)`` of
    ``left[p]`` against ``right[p]`` (then L = R = P).

    >>> c = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> raw = np.array([[0.5]])  # left's top 2: 1, 0.6 (z = -1.5); right's: 1, 0.8 (z = -4)
    >>> round(float(as_norm(raw, np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), c, 2)[0, 0]), 6)
    -2.75
    >>> as_norm(raw[0], np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), c, 2).round(6).tolist()
    [-2.75]
    """
    mu_l, sd_l = cohort_stats(left, cohort, top_n)
    mu_r, sd_r = cohort_stats(right, cohort, top_n)
    if np.ndim(raw) == 2:
        mu_l, sd_l, mu_r, sd_r = mu_l[:, None], sd_l[:, None], mu_r[None], sd_r[None]
    scores: np.ndarray = 0.5 * (_standardise(raw, mu_l, sd_l) + _standardise(raw, mu_r, sd_r))
    return scores
