"""`evaluate`: run a checkpoint over a store split (or a trial list) and write the report."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxid.errors import ConfigError, DataError, ModelError
from voxid.evaluation import plots
from voxid.evaluation.common import EvalOptions, write_csv
from voxid.evaluation.inference import Outputs, run_gmm, run_torch
from voxid.evaluation.report import summarise, write_report

if TYPE_CHECKING:
    from voxid.card import ModelCard


def _item_names(ds: Any) -> np.ndarray:
    return np.asarray(ds.info.speakers, dtype=object)[ds.labels].astype(str)


def _model_labels(card: ModelCard, model: Any, is_gmm: bool) -> list[str]:
    if not is_gmm:
        return list(card.labels)
    cls = np.asarray(model.labels_)
    if cls.dtype.kind in "USO":
        return [str(x) for x in cls]
    return [card.labels[int(i)] for i in cls]


def _run(
    model: Any, card: ModelCard, ds: Any, is_gmm: bool, opts: EvalOptions, mc: int = 0
) -> Outputs:
    if is_gmm:
        return run_gmm(model, ds, card.feature_dict)
    return run_torch(model, ds, batch_size=opts.batch_size, mc_samples=mc, seed=opts.seed)


def evaluate(
    checkpoint: str | Path, data: str | Path | None, out_dir: str | Path, options: EvalOptions
) -> dict[str, Any]:
    """Evaluate a run folder or checkpoint and write ``report.json``, ``report.md`` and plots.

    The checkpoint's mode decides the report (identification or authentication) unless
    ``options.verify`` asks for verification on embeddings. Returns the report dict.
    """
    from voxid.checkpoint import load_checkpoint, resolve_run

    options.check()
    path = resolve_run(checkpoint)
    card, model = load_checkpoint(path)
    is_gmm = not hasattr(model, "encoder")
    out = Path(out_dir)
    report: dict[str, Any] = {
        "voxid_version": _version(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(path),
        "model": {
            "name": card.model.name or ("gmm" if is_gmm else None),
            "mode": card.mode,
            "n_classes": len(card.labels),
            "fingerprint": card.fingerprint,
        },
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    }
    figures: dict[str, str] = {}
    if options.verify:
        from voxid.evaluation.verify_run import run_verification

        if is_gmm:
            raise ModelError(f"{path}: a GMM has no embeddings; verification needs a neural model")
        report["mode"] = "verify"
        report.update(run_verification(model, card, data, out, options, figures))
    else:
        if data is None:
            raise ConfigError("data: a store (--data) is needed to evaluate")
        report["mode"] = report["model"]["mode"]
        report.update(_closed_set(model, card, Path(data), out, options, figures, is_gmm))
    report["summary"] = summarise(report)
    write_report(out, report, figures)
    return report


def _closed_set(
    model: Any,
    card: ModelCard,
    data: Path,
    out: Path,
    opts: EvalOptions,
    figures: dict,
    is_gmm: bool,
) -> dict[str, Any]:
    from voxid.data.loader import StoreDataset

    mode = card.mode  # one of MODES: checked when the card was read
    if is_gmm and opts.mc_samples:
        raise ModelError("mc_samples: a GMM has no dropout; MC uncertainty needs a neural model")
    ds = StoreDataset(data, opts.split, include_augmented=False, cache=True, speakers=opts.speakers)
    outputs = _run(model, card, ds, is_gmm, opts, opts.mc_samples)
    names, sources = _item_names(ds), ds.items["source"].astype(str)
    labels = _model_labels(card, model, is_gmm)
    section: dict[str, Any] = {
        "data": {
            "store": str(data),
            "split": opts.split,
            "fingerprint": ds.info.fingerprint,
            "items": len(ds),
            "files": int(np.unique(sources).size),
            "speakers": int(np.unique(names).size),
        },
        "speed": {
            **outputs.speed(),
            "includes_features": ds.info.feature_config.kind == "waveform",
        },
    }
    if mode == "authenticate":
        from voxid.evaluation.authentication import (
            authentication_report,
            member_index,
            member_scores,
        )
        from voxid.evaluation.verify_run import cohort_embeddings

        by_speaker = card.auth_scoring == "speakers"
        weights = model.head.weight.detach().double().numpy() if by_speaker else None
        scores = member_scores(outputs.probs, outputs.embeddings, card, weights)
        auth, curves = authentication_report(names, sources, scores, card)
        section["authentication"] = auth
        cohort = cohort_embeddings(model, data, opts) if by_speaker else None
        if cohort is not None:
            normed = member_scores(None, outputs.embeddings, card, weights, cohort, opts.asnorm_top)
            score = f"highest AS-normed cosine to a member's class weight ({len(cohort)} cohort)"
            section["authentication_asnorm"] = authentication_report(
                names, sources, normed, card, score=score
            )[0]
        for level, (tar, non) in curves.items():
            figures[f"det_roc_{level}"] = plots.det_roc_png(
                tar, non, out / f"det_roc_{level}.png", title=f"authentication, {level} level"
            ).name
            figures[f"scores_{level}"] = plots.histogram_png(
                tar,
                non,
                out / f"scores_{level}.png",
                threshold=auth[level]["threshold"],
                title=f"member and outsider scores, {level} level",
            ).name
        members = set(auth["members"])
        if by_speaker:  # MC uncertainty over the speaker classes, as in identification
            index = {n: i for i, n in enumerate(labels)}
            y = np.array([index.get(n, -1) for n in names])
            known = y >= 0
        else:
            y = np.array(
                [member_index(labels) if n in members else 1 - member_index(labels) for n in names]
            )
            known = np.ones(len(names), dtype=bool)
    else:
        from voxid.evaluation.identification import identification_report, pseudo_voices

        pseudo = pseudo_voices(labels)
        if pseudo.any():
            outputs = _without_classes(outputs, pseudo)
            labels = [label for label, drop in zip(labels, pseudo, strict=True) if not drop]
        ident, confusions = identification_report(
            names, sources, outputs.scores, outputs.probs, labels
        )
        section["identification"] = ident
        if pseudo.any():
            ident["pseudo_voices_excluded"] = int(pseudo.sum())
        for level, conf in confusions.items():
            write_csv(
                out / f"confusion_{level}.csv",
                ["true \\ predicted", *conf.names],
                [[n, *row.tolist()] for n, row in zip(conf.names, conf.matrix, strict=True)],
            )
            figures[f"confusion_{level}"] = plots.confusion_png(
                conf.matrix,
                conf.names,
                out / f"confusion_{level}.png",
                title=f"confusion, {level} level (row-normalised)",
            ).name
        index = {n: i for i, n in enumerate(labels)}
        known = np.array([n in index for n in names])
        y = np.array([index.get(n, -1) for n in names])
    if outputs.mc_probs is not None:
        section["uncertainty"] = _uncertainty(outputs, y, known, labels, ds, out, opts, figures)
    return section


def _without_classes(outputs: Outputs, drop: np.ndarray) -> Outputs:
    """`outputs` with the classes in `drop` taken out: their score columns removed and the
    probabilities renormalised over the rest (every MC sample too)."""
    keep = ~drop

    def renorm(p: np.ndarray) -> np.ndarray:
        p = p[..., keep]
        return p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-30)

    return dataclasses.replace(
        outputs,
        scores=outputs.scores[:, keep],
        probs=renorm(outputs.probs),
        mc_probs=None if outputs.mc_probs is None else renorm(outputs.mc_probs),
    )


def _uncertainty(
    outputs: Outputs,
    y: np.ndarray,
    known: np.ndarray,
    labels: list[str],
    ds: Any,
    out: Path,
    opts: EvalOptions,
    figures: dict,
) -> dict[str, Any]:
    from voxid.evaluation.uncertainty import per_sample, uncertainty_report

    if not known.any():
        raise DataError("uncertainty: no test item belongs to a model speaker")
    rows = np.flatnonzero(known)
    sources, chunks = ds.items["source"].astype(str), ds.items["chunk_index"]
    ids = [f"{sources[i]}#{chunks[i]}" for i in rows]
    mc, probs = outputs.mc_probs, outputs.probs
    if mc is None or probs is None:
        raise ModelError("uncertainty: needs the MC-dropout and plain class probabilities")
    rep, arrays = uncertainty_report(
        mc[:, known],
        probs[known],
        y[known],
        labels=labels,
        item_ids=ids,
        entropy_threshold=opts.entropy_threshold,
    )
    if (~known).any():  # never-seen speakers: a good model should be unsure about them
        unseen = per_sample(mc[:, ~known])
        rep["unseen_mean_entropy"] = float(unseen["entropy"].mean())
        rep["unseen_flagged_share"] = float(np.mean(unseen["entropy"] > rep["entropy_threshold"]))
    s = arrays["samples"]
    header = ["item", "true", "predicted", "mean_prob", "std", "entropy", "mutual_information"]
    table = [
        [ids[k], labels[y[i]], labels[s["pred"][k]]]
        + [f"{s[key][k]:.6f}" for key in ("mean_prob", "std", "entropy", "mutual_information")]
        + [int(arrays["flagged"][k])]
        for k, i in enumerate(rows)
    ]
    write_csv(out / "uncertainty.csv", [*header, "flagged"], table)
    figures["reliability"] = plots.reliability_png(
        {
            f"MC dropout (K={mc.shape[0]})": arrays["reliability_mc"],
            "deterministic": arrays["reliability_det"],
        },
        out / "reliability.png",
    ).name
    figures["entropy"] = plots.entropy_png(
        s["entropy"], arrays["correct"], rep["entropy_threshold"], out / "entropy.png"
    ).name
    return rep


def _version() -> str:
    from voxid._version import __version__

    return __version__
