"""Choose a model's verification threshold on held-out data (`voxid calibrate`).

Trials mirror how the recogniser is used: every utterance of a split becomes one embedding
(the renormalised mean of its chunks' embeddings); each speaker is enrolled with the mean of
its first few utterances, and every remaining utterance is scored (cosine, AS-normed when
the model carries a cohort, see `voxid fit-lda`) against every speaker: target trials for
its own speaker, non-target trials for the others. The threshold is chosen for a target
FAR, or at the equal error rate, with `voxid.metrics`, and stored in the checkpoint
(`voxid.checkpoint.save_threshold`) where `Recognizer` picks it up.

The achieved FAR/FRR is reported twice: on the trials the threshold was chosen on, and by
two-fold cross-validation over test utterances (choose on one half, measure on the other),
which is the honest estimate of what a new utterance will see.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxid.errors import ConfigError, DataError, ModelError
from voxid.registry import mean_embedding, normalize_rows
from voxid.scoring import as_norm


@dataclass
class CalibrationReport:
    """The chosen threshold and the error rates it gives."""

    threshold: float
    kind: str
    far: float
    frr: float
    heldout_far: float
    heldout_frr: float
    eer: float
    n_target: int
    n_nontarget: int
    n_speakers: int
    n_utterances: int
    saved_to: list[str]
    n_enroll: int = 3

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def utterance_embeddings(
    run: str | os.PathLike, store: str | os.PathLike, split: str, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Embed every utterance of `split` in a store: `(embeddings (U, D), labels (U,), names,
    cohort)`, the last the model's score-normalisation cohort (or None).

    Chunks of one source file are embedded and averaged (L2-normalised mean, renormalised),
    as `Recognizer.embed` does for long audio. Offline-augmented copies are left out.
    """
    import torch

    from voxid.checkpoint import load_checkpoint
    from voxid.data.loader import StoreDataset

    meta, model = load_checkpoint(run)
    if not isinstance(model, torch.nn.Module) or not model.is_embedding_model:
        raise ModelError(
            f"{run}: {meta.get('model_name')} has no speaker embeddings to "
            "calibrate a cosine threshold on"
        )
    ds = StoreDataset(store, split=split, include_augmented=False)
    raw = ds.info.feature_config.kind == "waveform"
    if not raw:
        ds.info.check_compatible(meta["feature_config"])
    lengths = ds.items["length"]
    embs = np.zeros((len(ds), model.embedding_dim), dtype=np.float32)
    with torch.inference_mode():
        # Equal-length items share a batch, so no padding reaches the pooling layers.
        for n in np.unique(lengths):
            idx = np.flatnonzero(lengths == n)
            for start in range(0, idx.size, batch_size):
                part = idx[start : start + batch_size]
                x = torch.stack([ds[int(i)][0] for i in part])
                out = model.embed_waveform(x) if raw else model.embed(x)
                embs[part] = out.float().numpy()
    ds.close()
    sources = ds.items["source"]
    keys, inverse = np.unique(sources, return_inverse=True)
    utt = np.stack([mean_embedding(embs[inverse == k]) for k in range(len(keys))])
    labels = np.array([ds.labels[np.flatnonzero(inverse == k)[0]] for k in range(len(keys))])
    return utt, labels, list(ds.info.speakers), model.score_cohort()


def enrolment_size(labels: np.ndarray, n_enroll: int | None = None) -> int:
    """Utterances per enrolment: `n_enroll`, or by default the largest of 3, 2 and 1 that
    leaves at least two speakers a test utterance (a default split of 30 files per speaker
    holds 3 in val, which 3-utterance enrolments would use up).

    >>> enrolment_size(np.array([0, 0, 0, 1, 1, 1])), enrolment_size(np.array([0, 1]), 2)
    (2, 2)
    """
    if n_enroll is not None:
        if n_enroll < 1:
            raise ConfigError(f"n_enroll: must be at least 1, got {n_enroll}")
        return n_enroll
    counts = np.unique(labels, return_counts=True)[1]
    return next((n for n in (3, 2) if (counts > n).sum() >= 2), 1)


def cosine_trials(
    embs: np.ndarray,
    labels: np.ndarray,
    n_enroll: int | None = None,
    cohort: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target and non-target scores, and the test utterance index of each score row.

    Each speaker with more than `n_enroll` utterances (default: `enrolment_size`) is
    enrolled with the mean of its first `n_enroll`; every other utterance of those speakers
    is scored against every model: the cosine, AS-normed against `cohort` when given, as
    `Recognizer` scores.

    >>> e = np.eye(4, dtype=np.float32)[[0, 0, 0, 1, 1, 1]]
    >>> tar, non, _ = cosine_trials(e, np.array([0, 0, 0, 1, 1, 1]), n_enroll=2)
    >>> tar.tolist(), non.tolist()
    ([1.0, 1.0], [0.0, 0.0])
    """
    n_enroll = enrolment_size(labels, n_enroll)
    names, counts = np.unique(labels, return_counts=True)
    speakers = names[counts > n_enroll]
    if len(speakers) < 2:
        most = int(counts.max()) if counts.size else 0
        raise DataError(
            f"calibration needs at least 2 speakers with more than {n_enroll} "
            f"utterances, found {len(speakers)} (at most {most} utterances per speaker in this "
            f"split): use fewer enrolment utterances (--n-enroll), or give the held-out "
            f"split more files (voxid prepare --split 0.6,0.2,0.2)"
        )
    models, test = [], []
    for s in speakers:
        idx = np.flatnonzero(labels == s)
        models.append(mean_embedding(embs[idx[:n_enroll]]))
        test.extend(idx[n_enroll:])
    test = np.array(test)
    probes, refs = normalize_rows(embs[test]), np.stack(models)
    scores = probes @ refs.T  # (n_test, n_speakers)
    if cohort is not None:
        scores = as_norm(scores, probes, refs, cohort)
    is_target = labels[test][:, None] == np.array(speakers)[None, :]
    rows = np.broadcast_to(np.arange(len(test))[:, None], scores.shape)
    return (
        scores[is_target],
        scores[~is_target],
        np.concatenate([rows[is_target], rows[~is_target]]),
    )


def choose_threshold(tar: np.ndarray, non: np.ndarray, far: float | None) -> float:
    """Threshold for a target FAR (`far`), or at the EER when `far` is None."""
    from voxid.metrics import eer, threshold_at_far

    return float(threshold_at_far(non, far)) if far is not None else float(eer(tar, non)[1])


def _heldout(
    tar: np.ndarray, non: np.ndarray, rows: np.ndarray, far: float | None, seed: int = 0
) -> tuple[float, float]:
    from voxid.metrics import far_frr

    n_rows = int(rows.max()) + 1
    fold = np.random.default_rng(seed).permutation(n_rows) % 2
    tar_fold, non_fold = fold[rows[: tar.size]], fold[rows[tar.size :]]
    fars, frrs = [], []
    for k in (0, 1):
        fit_t, fit_n = tar[tar_fold == k], non[non_fold == k]
        ev_t, ev_n = tar[tar_fold != k], non[non_fold != k]
        if min(fit_t.size, fit_n.size, ev_t.size, ev_n.size) == 0:
            continue
        a, r = far_frr(ev_t, ev_n, choose_threshold(fit_t, fit_n, far))
        fars.append(a), frrs.append(r)
    return (float(np.mean(fars)), float(np.mean(frrs))) if fars else (float("nan"),) * 2


def calibrate(
    run: str | os.PathLike,
    store: str | os.PathLike,
    *,
    split: str = "val",
    far: float | None = 0.01,
    n_enroll: int | None = None,
    save: bool = True,
) -> CalibrationReport:
    """Choose and (with `save`) store the cosine threshold of `run` on a store split.

    Arguments:
        run: run folder or checkpoint file.
        store: the HDF5 store (`voxid prepare`) holding the held-out split.
        split: the split to calibrate on (never the training split).
        far: target false-acceptance rate; None chooses the EER threshold.
        n_enroll: utterances per speaker averaged into its enrolment model (default: 3, or
            fewer where the split holds too few per speaker; see `enrolment_size`).
    """
    from voxid.checkpoint import refuse_shipped, resolve_run, save_threshold
    from voxid.metrics import eer, far_frr

    if far is not None and not 0 < far < 1:
        raise ConfigError(f"far: must be in (0, 1), got {far}")
    if save and not Path(run).is_dir():
        refuse_shipped(resolve_run(run), "store a threshold")  # before the slow part
    embs, labels, _, cohort = utterance_embeddings(run, store, split)
    n_enroll = enrolment_size(labels, n_enroll)
    tar, non, rows = cosine_trials(embs, labels, n_enroll, cohort)
    threshold = choose_threshold(tar, non, far)
    a, r = far_frr(tar, non, threshold)
    ha, hr = _heldout(tar, non, rows, far)
    score = "cosine" if cohort is None else "asnorm"
    kind = f"{score}:far={far:g}" if far is not None else f"{score}:eer"
    saved = [str(p) for p in save_threshold(run, threshold, kind)] if save else []
    return CalibrationReport(
        threshold,
        kind,
        a,
        r,
        ha,
        hr,
        float(eer(tar, non)[0]),
        tar.size,
        non.size,
        int(np.unique(labels).size),
        int(embs.shape[0]),
        saved,
        n_enroll,
    )
