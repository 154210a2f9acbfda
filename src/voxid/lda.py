"""Fit an LDA projection for a trained run and store it with the model (`voxid fit-lda`).

The projection (`voxid.models.projection`) is fitted on the embeddings of labelled
speakers, normally the training split the model learnt from, and written into the run's
`model.pt` and `best.ckpt` (atomically, each file whole or untouched). From then on every
embedding the run gives, through torch or an ONNX export made afterwards, is projected.
Refitting replaces the old projection; it is always fitted on the unprojected embeddings.

With `cohort` it also stores the speakers' mean projected embeddings, and the recogniser
then AS-norms every score against them (`voxid.inference.scoring`). A threshold from
`voxid calibrate` was chosen on the old scores, so it is cleared: calibrate again.
Thresholds on the model's own head outputs (an authentication model's P(member) or member
cosine) do not change and are kept.

`adapt_run_lda` (`voxid fit-lda --adapt`) keeps a fitted projection and bends it towards a
new domain, with no training: labelled recordings of a few speakers from the user's own
recordings give the within-speaker scatter of that domain (takes, rooms, microphones),
which is whitened in part on top of the LDA, and their means join the cohort. An LDA needs
hundreds of speakers; this step needs only tens, as the domain adaptation of PLDA back-ends
does (Garcia-Romero and McCree 2014).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxid.errors import ModelError


@dataclass
class LdaReport:
    """What was fitted, on what, and where it was stored."""

    dim: int
    input_dim: int
    n_speakers: int
    n_items: int
    store: str
    split: str
    cleared_threshold: float | None
    saved_to: list[str]
    cohort_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)


def _targets(run: str | os.PathLike) -> list[Path]:
    from voxid.checkpoint import resolve_run

    path = Path(run)
    if path.is_dir():
        found = [path / n for n in ("model.pt", "best.ckpt") if (path / n).is_file()]
        if not found:
            raise ModelError(f"{path}: no model.pt or best.ckpt in this folder to fit LDA for")
        return found
    return [resolve_run(path)]


def _save(
    targets: list[Path],
    model: Any,
    projection: dict[str, Any],
    store: str | os.PathLike,
    split: str,
    labels: np.ndarray,
) -> LdaReport:
    """Store `model`'s projection in `targets` (`store_projection`) and report it."""
    from voxid.checkpoint import store_projection

    cleared = store_projection(targets, model, projection)
    cohort = model.projection.cohort
    return LdaReport(
        model.embedding_dim,
        int(model.projection.mean.shape[0]),
        int(np.unique(labels).size),
        int(labels.size),
        str(store),
        split,
        cleared,
        [str(t) for t in targets],
        0 if cohort is None else int(cohort.shape[0]),
    )


def fit_run_lda(
    run: str | os.PathLike,
    store: str | os.PathLike,
    split: str = "train",
    dim: int | None = None,
    save: bool = True,
    cohort: bool = False,
) -> LdaReport:
    """Embed a store's split with a run's model, fit LDA on its speakers and store it.

    Each recording of the split gives one embedding, exactly as `Recognizer.embed` gives it
    (`voxid.calibration.store_utterances`).

    Arguments:
        run: run folder (both `model.pt` and `best.ckpt` are updated) or checkpoint file.
        store: HDF5 store (`voxid prepare`) with labelled speakers, waveforms or the
            model's features.
        split: the split to fit on; the training split, since LDA learns from the
            speakers the model was trained on, and held-out speakers stay unseen.
        dim: output size K (default: the largest, min(embedding size, speakers - 1)).
        cohort: also store the speakers' mean projected embeddings, against which the
            recogniser then AS-norms its scores. Off by default: it helps some models and
            hurts others (BENCHMARKS.md, P-C), so check it with `voxid evaluate --verify`,
            whose asnorm figures use it, and it needs a crowd of speakers (tens at least)
            to compare with.
    """
    from voxid.calibration import store_utterances
    from voxid.checkpoint import load_checkpoint, refuse_shipped
    from voxid.models.base import SpeakerModel
    from voxid.models.projection import fit_lda

    targets = _targets(run)
    for target in targets if save else []:
        refuse_shipped(target, "fit an LDA projection")  # before the slow part
    card, model = load_checkpoint(targets[0])
    if not isinstance(model, SpeakerModel) or not model.is_embedding_model:
        raise ModelError(f"{targets[0]}: {card.model.name} has no speaker embeddings")
    model.set_projection(None)
    # One embedding per recording, the recogniser's own (voxid.inference.chunks), so the
    # projection is fitted on what it will project.
    embeddings, labels, _, _ = store_utterances(model, card, store, split, str(targets[0]))
    n_speakers = int(np.unique(labels).size)
    fitted = fit_lda(embeddings, labels, dim, cohort=cohort)
    model.set_projection(fitted)
    projection = {"kind": "lda", "store": Path(store).name, "split": split,
                  "speakers": n_speakers, "items": int(labels.size),
                  "cohort": bool(cohort)}  # fmt: skip
    return _save(targets if save else [], model, projection, store, split, labels)


def adapt_run_lda(
    run: str | os.PathLike,
    store: str | os.PathLike,
    weight: float = 0.2,
    split: str = "train",
    save: bool = True,
) -> LdaReport:
    """Adapt a run's fitted LDA projection to the speakers of a store from a new domain,
    without training (`voxid.models.projection.adapt_lda`): the store's within-speaker
    scatter, at `weight` (0-1) against the projection's own, is whitened on top of it, and
    the speakers' means join the AS-norm cohort when the model has one.

    Measured on P-C (BENCHMARKS.md): the shipped base adapted to asc30 00000001-20 scores
    asc30 00000021-30 at 6.8 % EER instead of 7.9 %. The store's speakers should be voices
    the model will not be asked to verify against, or they sit in its cohort as well.
    """
    from voxid.calibration import store_utterances
    from voxid.checkpoint import load_checkpoint, refuse_shipped
    from voxid.models.base import SpeakerModel
    from voxid.models.projection import adapt_lda

    targets = _targets(run)
    for target in targets if save else []:
        refuse_shipped(target, "adapt its LDA projection")  # before the slow part
    card, model = load_checkpoint(targets[0])
    if not isinstance(model, SpeakerModel) or model.projection is None:
        raise ModelError(
            f"{targets[0]}: no LDA projection to adapt; fit one first (voxid fit-lda RUN "
            "--data TRAINING_STORE)"
        )
    before = card.scoring.projection or {"kind": "lda"}
    # The projected embeddings, as the recogniser gives them: the domain's scatter is
    # measured where it will be whitened.
    embeddings, labels, _, _ = store_utterances(model, card, store, split, str(targets[0]))
    n_speakers = int(np.unique(labels).size)
    model.set_projection(adapt_lda(model.projection, embeddings, labels, weight))
    adapted = {"store": Path(store).name, "split": split, "speakers": n_speakers,
               "items": int(labels.size), "weight": float(weight)}  # fmt: skip
    projection = {**before, "adapted": adapted}
    return _save(targets if save else [], model, projection, store, split, labels)
