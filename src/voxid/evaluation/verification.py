"""Speaker verification on embeddings: enrolment, trials from a store, cosine and AS-norm.

Speaker trials (protocol P-C): each speaker is enrolled with the mean of the L2-normalised
embeddings of N of its files (a file's embedding is the normalised mean of its chunks'),
and every test chunk is scored against every enrolled speaker. A file's score against a
speaker is the mean of its chunks' scores, so both levels are reported. Pair trials score
file embeddings two by two (a seeded sample when there are too many pairs).

AS-norm (`inference.scoring`, shared with the recogniser): each side of a trial is standardised
against the `top_n` closest scores of a cohort of other speakers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxid import metrics
from voxid.errors import DataError, require_positive
from voxid.evaluation.common import first_by_group, group_sources, mean_by_group
from voxid.inference.scoring import as_norm
from voxid.numeric import normalize_rows

__all__ = ["TrialScores", "detection_metrics", "enrol_speakers",
           "file_embeddings", "pair_trials", "speaker_trials", "split_enrol_test",
           "verification_report"]  # fmt: skip

P_TARGETS = (0.01, 0.001)


@dataclass
class TrialScores:
    """Target and non-target scores of one trial level (chunk or file), raw and AS-normed."""

    tar: np.ndarray
    non: np.ndarray
    norm_tar: np.ndarray | None = None
    norm_non: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def file_embeddings(
    emb: np.ndarray, sources: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(files, inverse, embeddings): each file's normalised mean chunk embedding."""
    files, inverse = group_sources(sources)
    # Chunks are normalised in their own precision; means and file vectors in float64.
    means = mean_by_group(normalize_rows(emb, None), inverse, len(files))
    return files, inverse, normalize_rows(means, np.float64)


def enrol_speakers(
    emb: np.ndarray, names: np.ndarray, sources: np.ndarray, n_enroll: int | None
) -> tuple[list[str], np.ndarray]:
    """Speaker models: the normalised mean of the embeddings of each speaker's first
    `n_enroll` files (sorted by path; all files when None)."""
    files, inverse, femb = file_embeddings(emb, sources)
    fname = first_by_group(names, inverse, len(files))
    speakers = sorted(set(fname.tolist()))
    models = []
    for spk in speakers:
        rows = np.flatnonzero(fname == spk)[: n_enroll or None]
        models.append(femb[rows].mean(axis=0))
    return speakers, normalize_rows(np.array(models), np.float64)


def split_enrol_test(
    names: np.ndarray, sources: np.ndarray, n_enroll: int
) -> tuple[np.ndarray, np.ndarray]:
    """Enrol/test masks within one split: each speaker's first `n_enroll` files enrol.

    >>> e, t = split_enrol_test(np.array(list("aaab")), np.array(["1", "2", "3", "4"]), 1)
    >>> e.tolist(), t.tolist()
    ([True, False, False, True], [False, True, True, False])
    """
    require_positive("n_enroll", n_enroll, integer=True)
    enrol = np.zeros(len(names), dtype=bool)
    for spk in np.unique(names):
        spk_files = np.unique(sources[names == spk])[:n_enroll]
        enrol |= (names == spk) & np.isin(sources, spk_files)
    return enrol, ~enrol


def speaker_trials(
    test_emb: np.ndarray,
    test_names: np.ndarray,
    test_sources: np.ndarray,
    speakers: list[str],
    models: np.ndarray,
    cohort: np.ndarray | None = None,
    top_n: int = 100,
) -> dict[str, TrialScores]:
    """Every test chunk (and file) against every enrolled speaker."""
    if len(test_emb) == 0:
        raise DataError("verification: no test items")
    test = normalize_rows(test_emb, None).astype(np.float64)
    raw = test @ models.T  # (chunks, speakers)
    target = np.asarray(test_names)[:, None] == np.asarray(speakers)[None, :]
    norm = None if cohort is None else as_norm(raw, test, models, cohort, top_n)
    files, inverse = group_sources(test_sources)
    file_target = first_by_group(target, inverse, len(files))
    out = {}
    for level, s, n, tmask in (
        ("chunk", raw, norm, target),
        (
            "file",
            mean_by_group(raw, inverse, len(files)),
            None if norm is None else mean_by_group(norm, inverse, len(files)),
            file_target,
        ),
    ):
        out[level] = TrialScores(
            s[tmask], s[~tmask], None if n is None else n[tmask], None if n is None else n[~tmask]
        )
    return out


def _pair_index(k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of linear indices `k` into the strict upper triangle of an n x n matrix.

    >>> [a.tolist() for a in _pair_index(np.arange(6), 4)]
    [[0, 0, 0, 1, 1, 2], [1, 2, 3, 2, 3, 3]]
    """
    k = np.asarray(k, dtype=np.int64)
    i = n - 2 - np.floor(np.sqrt(-8.0 * k + 4.0 * n * (n - 1) - 7) / 2.0 - 0.5).astype(np.int64)
    j = k + i + 1 - n * (n - 1) // 2 + (n - i) * ((n - i) - 1) // 2
    return i, j


def pair_trials(
    emb: np.ndarray,
    names: np.ndarray,
    sources: np.ndarray,
    *,
    max_trials: int = 100_000,
    seed: int = 0,
    cohort: np.ndarray | None = None,
    top_n: int = 100,
) -> dict[str, TrialScores]:
    """File pairs: all of them, or `max_trials` drawn at random (seeded) when more."""
    files, inverse, femb = file_embeddings(emb, sources)
    fname = first_by_group(names, inverse, len(files))
    n = len(files)
    total = n * (n - 1) // 2
    if total == 0:
        raise DataError("verification: pair trials need at least two files")
    sampled = total > max_trials
    k = (
        np.sort(np.random.default_rng(seed).choice(total, size=max_trials, replace=False))
        if sampled
        else np.arange(total)
    )
    i, j = _pair_index(k, n)
    raw = np.sum(femb[i] * femb[j], axis=1)
    target = fname[i] == fname[j]
    norm = None if cohort is None else as_norm(raw, femb[i], femb[j], cohort, top_n)
    info = {"pairs_total": total, "sampled": sampled, "seed": seed}
    return {
        "file": TrialScores(
            raw[target],
            raw[~target],
            None if norm is None else norm[target],
            None if norm is None else norm[~target],
            info,
        )
    }


def detection_metrics(tar: np.ndarray, non: np.ndarray) -> dict[str, Any]:
    """EER, its threshold, minDCF at p_target 0.01 and 0.001, and score summaries."""
    if tar.size == 0 or non.size == 0:
        raise DataError(
            f"verification: {tar.size} target and {non.size} non-target trials; need both"
        )
    value, threshold = metrics.eer(tar, non)
    return {
        "n_target": int(tar.size),
        "n_nontarget": int(non.size),
        "eer": value,
        "eer_threshold": threshold,
        "min_dcf": {str(p): metrics.min_dcf(tar, non, p) for p in P_TARGETS},
        "target_mean": float(tar.mean()),
        "nontarget_mean": float(non.mean()),
    }


def verification_report(
    levels: dict[str, TrialScores], stored_threshold: float | None = None
) -> dict[str, Any]:
    """JSON-ready metrics per level (and per AS-normed level when a cohort was used).

    `stored_threshold` (the checkpoint's calibrated cosine threshold) adds FAR and FRR at
    that threshold to the cosine metrics: how the deployed decision fares on these trials.
    """
    out: dict[str, Any] = {}
    for level, ts in levels.items():
        entry = {"cosine": detection_metrics(ts.tar, ts.non), **ts.info}
        if stored_threshold is not None:
            far, frr = metrics.far_frr(ts.tar, ts.non, stored_threshold)
            entry["cosine"]["stored_threshold"] = {
                "threshold": stored_threshold,
                "far": far,
                "frr": frr,
            }
        if ts.norm_tar is not None and ts.norm_non is not None:
            entry["asnorm"] = detection_metrics(ts.norm_tar, ts.norm_non)
        out[level] = entry
    return out
