"""The verification branch of `evaluate`: embeddings from a store or a trial list, scored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxid.errors import ConfigError, DataError
from voxid.evaluation import plots, verification
from voxid.evaluation.inference import run_torch

if TYPE_CHECKING:
    from voxid.card import ModelCard
    from voxid.evaluation.common import EvalOptions


def _embeddings(
    model: Any, path: Path, split: str | list[str] | None, opts: EvalOptions, speakers=None
):
    from voxid.data.loader import StoreDataset

    ds = StoreDataset(path, split, include_augmented=False, cache=True, speakers=speakers)
    if not model.is_embedding_model:
        raise ConfigError(
            f"{model.name}: a pure classifier, its penultimate layer is no speaker embedding; "
            "verification needs crnn, ecapa or resnet34"
        )
    outputs = run_torch(model, ds, batch_size=opts.batch_size, seed=opts.seed)
    names = np.asarray(ds.info.speakers, dtype=object)[ds.labels].astype(str)
    return ds, outputs, names, ds.items["source"].astype(str)


def cohort_embeddings(model: Any, data: Path | None, opts: EvalOptions) -> np.ndarray | None:
    """The AS-norm cohort: one named by the options, else the model's own (`voxid fit-lda`),
    so the asnorm figures are the recogniser's scores."""
    if opts.cohort is None and opts.cohort_split is None:
        return model.score_cohort()
    store = Path(opts.cohort) if opts.cohort is not None else data
    if store is None:
        raise ConfigError("cohort_split: needs --data (or name a cohort store with --cohort)")
    _, outputs, _, sources = _embeddings(model, store, opts.cohort_split, opts)
    return verification.file_embeddings(outputs.embeddings, sources)[2]


def _stored_cosine_threshold(card: ModelCard) -> float | None:
    """The checkpoint's threshold when it was calibrated on cosine scores (else None)."""
    kind = card.scoring.threshold_kind or ""
    value = card.scoring.threshold
    return value if value is not None and kind.startswith("cosine") else None


def run_verification(
    model: Any,
    card: ModelCard,
    data: str | Path | None,
    out: Path,
    opts: EvalOptions,
    figures: dict,
) -> dict[str, Any]:
    """Score verification trials and draw their figures; returns the report sections."""
    data = None if data is None else Path(data)
    cohort = cohort_embeddings(model, data, opts)
    section: dict[str, Any] = {}
    if opts.trials is not None:
        from voxid.evaluation.trials import list_trials, read_trial_list

        trials = read_trial_list(opts.trials, opts.audio_root)
        levels, skipped = list_trials(model, trials, card, cohort, opts.asnorm_top)
        section["data"] = {
            "trials": str(opts.trials),
            "skipped": [{"path": p, "reason": r} for p, r in skipped],
        }
    else:
        if data is None:
            raise ConfigError("verification needs --data (a store) or --trials (a trial list)")
        test_split = opts.test_split or opts.split
        splits = (
            [test_split]
            if opts.enroll_split in (None, test_split)
            else [opts.enroll_split, test_split]
        )
        ds, outputs, names, sources = _embeddings(model, data, splits, opts, opts.speakers)
        split_of = ds.items["split"].astype(str)
        if opts.trial_mode == "pairs":  # pairs need no enrolment: every test file takes part
            test = split_of == test_split
            enrol = np.zeros_like(test)
        elif opts.enroll_split and opts.enroll_split != test_split:
            enrol, test = split_of == opts.enroll_split, split_of == test_split
        else:
            enrol, test = verification.split_enrol_test(names, sources, opts.n_enroll or 3)
        emb = outputs.embeddings
        if opts.trial_mode == "pairs":
            levels = verification.pair_trials(
                emb[test],
                names[test],
                sources[test],
                max_trials=opts.max_trials,
                seed=opts.seed,
                cohort=cohort,
                top_n=opts.asnorm_top,
            )
        else:
            if not enrol.any():
                raise DataError("verification: no enrolment items")
            speakers, models = verification.enrol_speakers(
                emb[enrol], names[enrol], sources[enrol], opts.n_enroll
            )
            levels = verification.speaker_trials(
                emb[test], names[test], sources[test], speakers, models, cohort, opts.asnorm_top
            )
        section["data"] = {
            "store": str(data),
            "enroll": "none (pair trials)"
            if opts.trial_mode == "pairs"
            else opts.enroll_split or f"first {opts.n_enroll or 3} files of {test_split}",
            "test": test_split,
            "fingerprint": ds.info.fingerprint,
            "enrolled_speakers": int(np.unique(names[enrol]).size),
            "enroll_files": int(np.unique(sources[enrol]).size),
            "test_items": int(test.sum()),
            "test_files": int(np.unique(sources[test]).size),
        }
        section["speed"] = {
            **outputs.speed(),
            "includes_features": ds.info.feature_config.kind == "waveform",
        }
    section["verification"] = {
        "trial_mode": "list" if opts.trials else opts.trial_mode,
        "cohort_size": None if cohort is None else len(cohort),
        **verification.verification_report(levels, _stored_cosine_threshold(card)),
    }
    stored = _stored_cosine_threshold(card)
    for level, ts in levels.items():
        kinds = [("cosine", ts.tar, ts.non)]
        if ts.norm_tar is not None and ts.norm_non is not None:
            kinds.append(("asnorm", ts.norm_tar, ts.norm_non))
        for kind, tar, non in kinds:
            key = f"{kind}_{level}"
            m = section["verification"][level][kind]
            figures[f"det_roc_{key}"] = plots.det_roc_png(
                tar, non, out / f"det_roc_{key}.png", title=f"verification, {kind}, {level} level"
            ).name
            figures[f"scores_{key}"] = plots.histogram_png(
                tar,
                non,
                out / f"scores_{key}.png",
                threshold=m["eer_threshold"],
                # the checkpoint's threshold is on raw cosine scores, not AS-norm ones
                calibrated=stored if kind == "cosine" else None,
                title=f"target and non-target scores ({kind}, {level} level)",
            ).name
    return section
