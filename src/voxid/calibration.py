"""Choose a model's verification threshold on held-out data (`voxid calibrate`).

Trials mirror how the recogniser is used: every recording of a split becomes one embedding,
exactly the one `Recognizer.embed` gives it (`voxid.inference.chunks`); enrolments are means
of a few utterances of one speaker, and every utterance is scored (cosine, AS-normed when
the model carries a cohort, see `voxid fit-lda`) against every enrolment that leaves it out:
target trials for its own speaker, non-target trials for the others (leave-one-out, so a
small split still gives every trial it can). The threshold is chosen for a target FAR, or at
the equal error rate, with `voxid.metrics`, and stored in the checkpoint
(`voxid.checkpoint.save_threshold`) where `Recognizer` picks it up.

The achieved FAR/FRR is reported twice, each with its trial count and a 95 % interval: on
the trials the threshold was chosen on, and by two-fold cross-validation over probe
utterances (choose on one half, measure on the other), the honest estimate of what a new
utterance will see. A threshold is not saved (unless forced) when the trials are too few
for the target FAR (`needed_trials`).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxid.card import ModelCard
from voxid.errors import ConfigError, DataError, ModelError
from voxid.inference.chunks import ChunkPolicy, embed_paths, torch_runner
from voxid.inference.registry import mean_embedding
from voxid.inference.scoring import as_norm
from voxid.numeric import normalize_rows

#: Confidence of the intervals on FAR and FRR in the report.
CONFIDENCE = 0.95
#: Target and non-target trials an EER threshold needs before it is saved (without --force).
MIN_EER_TRIALS = 10


@dataclass
class CalibrationReport:
    """The chosen threshold and the error rates it gives, with trial counts and 95 %
    (Clopper-Pearson) intervals. `n_speakers` took part in any trial, `n_target_speakers`
    had target trials; `supported` says whether the counts reach `needed_trials`."""

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
    n_target_speakers: int = 0
    far_ci: tuple[float, float] = (0.0, 1.0)
    frr_ci: tuple[float, float] = (0.0, 1.0)
    heldout_far_ci: tuple[float, float] = (0.0, 1.0)
    heldout_frr_ci: tuple[float, float] = (0.0, 1.0)
    needed_target: int = 0
    needed_nontarget: int = 0
    supported: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def store_utterances(
    model: Any, card: ModelCard, store: str | os.PathLike, split: str, source: str = "model"
) -> tuple[np.ndarray, np.ndarray, list[str], list[tuple[str, str]]]:
    """Embed the recordings behind a store split as the recogniser embeds them:
    `(embeddings (U, D), labels (U,), speaker names, skipped (path, reason))`.

    Each source file of the split (offline-augmented copies left out) is decoded and
    embedded through `voxid.inference.chunks` with the model's policy, so an utterance's
    embedding is exactly `Recognizer.embed` of that file; the store gives the files, their
    speakers and the split, not the samples. A file the recogniser refuses (too little
    speech) is skipped; a missing one is a DataError (the store was moved from its audio).
    """
    from voxid.data.loader import StoreDataset

    ds = StoreDataset(store, split=split, include_augmented=False)
    try:
        sources = ds.items["source"].astype(str)
        item_labels = np.asarray(ds.labels)
        speakers = list(ds.info.speakers)
    finally:
        ds.close()
    files, first = np.unique(sources, return_index=True)
    for f in files:
        if not Path(f).is_file():
            raise DataError(
                f"{store} ({split}): source recording {f} is missing; utterances are "
                "embedded from their recordings, as the recogniser embeds them"
            )
    policy = ChunkPolicy.from_card(card, source)
    embs, skipped = embed_paths(torch_runner(model), list(files), policy)
    kept = [i for i, f in enumerate(files) if f in embs]
    dim = int(model.embedding_dim)
    utt = np.stack([embs[files[i]] for i in kept]) if kept else np.zeros((0, dim), np.float32)
    return utt, item_labels[first[kept]], speakers, skipped


def utterance_embeddings(
    run: str | os.PathLike, store: str | os.PathLike, split: str
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Embed every utterance of `split` in a store: `(embeddings (U, D), labels (U,), names,
    cohort)`, the last the model's score-normalisation cohort (or None).

    An utterance is one source recording, embedded exactly as `Recognizer.embed` embeds it
    (`store_utterances`); recordings with too little speech are left out.
    """
    from voxid.checkpoint import load_checkpoint
    from voxid.models.base import SpeakerModel

    card, model = load_checkpoint(run)
    if not isinstance(model, SpeakerModel) or not model.is_embedding_model:
        raise ModelError(
            f"{run}: {card.model.name} has no speaker embeddings to calibrate a cosine threshold on"
        )
    utt, labels, names, _ = store_utterances(model, card, store, split, str(run))
    return utt, labels, names, model.score_cohort()


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


def _enrolments(labels: np.ndarray, n_enroll: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Utterance indices of every enrolment, and the label of each.

    A speaker with more than `n_enroll` utterances gets one enrolment starting at each of
    them (`n_enroll` consecutive ones, wrapping round), so every utterance is left out of
    some; one with exactly `n_enroll` gets one; one with fewer gets none.
    """
    members, owners = [], []
    for s in np.unique(labels):
        idx = np.flatnonzero(labels == s)
        if idx.size < n_enroll:
            continue
        starts = range(idx.size) if idx.size > n_enroll else [0]
        members += [idx[(j + np.arange(n_enroll)) % idx.size] for j in starts]
        owners += [s] * len(starts)
    return members, np.array(owners)


def cosine_trials(
    embs: np.ndarray,
    labels: np.ndarray,
    n_enroll: int | None = None,
    cohort: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target and non-target scores, and the utterance index (into `embs`) of each score's
    probe.

    Every utterance is a probe (leave-one-out). Enrolments are means of `n_enroll` utterances
    (default: `enrolment_size`), one starting at each utterance of a speaker that has more
    (see `_enrolments`). A probe is scored against every enrolment of its own speaker that
    leaves it out (target trials) and every enrolment of the others (non-target trials):
    the cosine, AS-normed against `cohort` when given, as `Recognizer` scores. Trials share
    utterances, so they are not independent: intervals on their rates are optimistic.

    >>> e = np.eye(4, dtype=np.float32)[[0, 0, 0, 1, 1, 1]]
    >>> tar, non, rows = cosine_trials(e, np.array([0, 0, 0, 1, 1, 1]), n_enroll=2)
    >>> tar.size, set(tar.tolist()), non.size, set(non.tolist()), sorted(set(rows.tolist()))
    (6, {1.0}, 18, {0.0}, [0, 1, 2, 3, 4, 5])
    """
    n_enroll = enrolment_size(labels, n_enroll)
    counts = np.unique(labels, return_counts=True)[1]
    testable = int((counts > n_enroll).sum())
    if testable < 2:
        most = int(counts.max()) if counts.size else 0
        raise DataError(
            f"calibration needs at least 2 speakers with more than {n_enroll} "
            f"utterances, found {testable} (at most {most} utterances per "
            f"speaker in this split): use fewer enrolment utterances (--n-enroll), or give "
            f"the held-out split more files (voxid prepare --split 0.6,0.2,0.2)"
        )
    members, owners = _enrolments(labels, n_enroll)
    probes = normalize_rows(embs)
    refs = np.stack([mean_embedding(embs[m]) for m in members])
    scores = probes @ refs.T  # (n_utterances, n_enrolments)
    if cohort is not None:
        scores = as_norm(scores, probes, refs, cohort)
    inside = np.zeros(scores.shape, dtype=bool)
    for j, m in enumerate(members):
        inside[m, j] = True
    same = labels[:, None] == owners[None, :]
    is_target, is_non = same & ~inside, ~same
    rows = np.broadcast_to(np.arange(len(embs))[:, None], scores.shape)
    return (
        scores[is_target],
        scores[is_non],
        np.concatenate([rows[is_target], rows[is_non]]),
    )


def needed_trials(far: float | None) -> tuple[int, int]:
    """Target and non-target trials a threshold needs before `calibrate` saves it.

    For a target FAR: 3 / FAR non-target trials (the rule of three: with none of n accepted,
    the 95 % upper bound on the FAR is about 3 / n); the target trials do not move that
    threshold. At the EER: `MIN_EER_TRIALS` of each kind.

    >>> needed_trials(0.01), needed_trials(0.25), needed_trials(None)
    ((0, 300), (0, 12), (10, 10))
    """
    if far is None:
        return MIN_EER_TRIALS, MIN_EER_TRIALS
    return 0, math.ceil(3.0 / far - 1e-9)


def choose_threshold(tar: np.ndarray, non: np.ndarray, far: float | None) -> float:
    """Threshold for a target FAR (`far`), or at the EER when `far` is None."""
    from voxid.metrics import eer, threshold_at_far

    return float(threshold_at_far(non, far)) if far is not None else float(eer(tar, non)[1])


def _heldout(
    tar: np.ndarray, non: np.ndarray, rows: np.ndarray, far: float | None, seed: int = 0
) -> tuple[int, int, int, int]:
    """Two-fold cross-validation over probe utterances: (false accepts, non-target trials,
    false rejects, target trials) pooled over both evaluation halves."""
    n_rows = int(rows.max()) + 1
    fold = np.random.default_rng(seed).permutation(n_rows) % 2
    tar_fold, non_fold = fold[rows[: tar.size]], fold[rows[tar.size :]]
    fa = n_non = fr = n_tar = 0
    for k in (0, 1):
        fit_t, fit_n = tar[tar_fold == k], non[non_fold == k]
        ev_t, ev_n = tar[tar_fold != k], non[non_fold != k]
        if min(fit_t.size, fit_n.size, ev_t.size, ev_n.size) == 0:
            continue
        thr = choose_threshold(fit_t, fit_n, far)
        fa, n_non = fa + int((ev_n >= thr).sum()), n_non + ev_n.size
        fr, n_tar = fr + int((ev_t < thr).sum()), n_tar + ev_t.size
    return fa, n_non, fr, n_tar


def _rate(errors: int, trials: int) -> float:
    return errors / trials if trials else float("nan")


def calibrate(
    run: str | os.PathLike,
    store: str | os.PathLike,
    *,
    split: str = "val",
    far: float | None = 0.01,
    n_enroll: int | None = None,
    save: bool = True,
    force: bool = False,
) -> CalibrationReport:
    """Choose and (with `save`) store the cosine threshold of `run` on a store split.

    Arguments:
        run: run folder or checkpoint file.
        store: the HDF5 store (`voxid prepare`) holding the held-out split.
        split: the split to calibrate on (never the training split).
        far: target false-acceptance rate; None chooses the EER threshold.
        n_enroll: utterances per speaker averaged into its enrolment model (default: 3, or
            fewer where the split holds too few per speaker; see `enrolment_size`).
        save: store the threshold in the run's checkpoints.
        force: save even when the split has fewer trials than `needed_trials` (otherwise a
            DataError says how many it had and needs, and nothing is written).
    """
    from voxid.checkpoint import refuse_shipped, resolve_run, save_threshold
    from voxid.metrics import eer, error_interval

    if far is not None and not 0 < far < 1:
        raise ConfigError(f"far: must be in (0, 1), got {far}")
    if save and not Path(run).is_dir():
        refuse_shipped(resolve_run(run), "store a threshold")  # before the slow part
    embs, labels, _, cohort = utterance_embeddings(run, store, split)
    n_enroll = enrolment_size(labels, n_enroll)
    tar, non, rows = cosine_trials(embs, labels, n_enroll, cohort)
    threshold = choose_threshold(tar, non, far)
    fa, fr = int((non >= threshold).sum()), int((tar < threshold).sum())
    h_fa, h_non, h_fr, h_tar = _heldout(tar, non, rows, far)
    need_tar, need_non = needed_trials(far)
    supported = tar.size >= need_tar and non.size >= need_non
    score = "cosine" if cohort is None else "asnorm"
    kind = f"{score}:far={far:g}" if far is not None else f"{score}:eer"
    if save and not supported and not force:
        aim = f"a FAR of {far:.2%}" if far is not None else "an EER threshold"
        raise DataError(
            f"{store} ({split}): {tar.size} target and {non.size} non-target trials cannot "
            f"support {aim}: it needs at least {need_non} non-target"
            + (f" and {need_tar} target" if need_tar else "")
            + " trials (rule of three); nothing saved: add speakers or files to the split, "
            "aim at a higher --far, or save anyway with --force / force=True"
        )
    saved = [str(p) for p in save_threshold(run, threshold, kind)] if save else []
    probe_labels = labels[rows]
    return CalibrationReport(
        threshold=threshold,
        kind=kind,
        far=_rate(fa, non.size),
        frr=_rate(fr, tar.size),
        heldout_far=_rate(h_fa, h_non),
        heldout_frr=_rate(h_fr, h_tar),
        eer=float(eer(tar, non)[0]),
        n_target=int(tar.size),
        n_nontarget=int(non.size),
        n_speakers=int(np.unique(probe_labels).size),
        n_utterances=int(embs.shape[0]),
        saved_to=saved,
        n_enroll=n_enroll,
        n_target_speakers=int(np.unique(probe_labels[: tar.size]).size),
        far_ci=error_interval(fa, non.size, CONFIDENCE),
        frr_ci=error_interval(fr, tar.size, CONFIDENCE),
        heldout_far_ci=error_interval(h_fa, h_non, CONFIDENCE),
        heldout_frr_ci=error_interval(h_fr, h_tar, CONFIDENCE),
        needed_target=need_tar,
        needed_nontarget=need_non,
        supported=supported,
    )
