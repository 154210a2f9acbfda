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
"""

from __future__ import annotations

import dataclasses
import functools
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
    import torch

    from voxid.calibration import store_utterances
    from voxid.card import ModelCard, ModelSpec
    from voxid.checkpoint import (
        PREFIX,
        load_checkpoint,
        model_fingerprint,
        read_checkpoint,
        refuse_shipped,
    )
    from voxid.io import atomic_write
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
    state = {PREFIX + k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    cleared = None
    for target in targets if save else []:
        ckpt = read_checkpoint(target)
        desc = ModelCard.from_dict(ckpt["voxid"], str(target))
        if (desc.scoring.threshold_kind or "").startswith(("cosine", "asnorm")):
            cleared = desc.scoring.threshold
            desc = desc.with_threshold(None, None)
        # Lightning's own entries (optimizer, loops) stay; the model's weights are replaced
        # by the same weights plus the projection.
        kept = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(PREFIX)}
        ckpt["state_dict"] = {**kept, **state}
        # The projection's size and cohort size, replacing those of an earlier fit.
        hparams = {k: v for k, v in desc.model.hparams.items() if not k.startswith("projection_")}
        hparams.update({k: v for k, v in model.hparams.items() if k.startswith("projection_")})
        projection = {"kind": "lda", "store": Path(store).name, "split": split,
                      "speakers": n_speakers, "items": int(labels.size),
                      "cohort": bool(cohort)}  # fmt: skip
        desc = dataclasses.replace(
            desc,
            model=ModelSpec(desc.model.name, hparams, int(model.embedding_dim)),
            fingerprint=model_fingerprint(state),
            scoring=dataclasses.replace(desc.scoring, projection=projection),
        )
        ckpt["voxid"] = desc.to_dict()
        atomic_write(target, functools.partial(torch.save, ckpt))
    return LdaReport(
        model.embedding_dim,
        int(fitted.mean.shape[0]),
        n_speakers,
        int(labels.size),
        str(store),
        split,
        cleared,
        [str(t) for t in targets] if save else [],
        n_speakers if cohort else 0,
    )
