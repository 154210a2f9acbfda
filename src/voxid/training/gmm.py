"""The GMM baseline through `voxid train`: fit per-speaker mixtures on MFCC frames.

No Lightning and no epochs: one fit on the training split, scored on validation and test.
The run folder holds `model.npz` (plain arrays), `model.json` (the same description a torch
checkpoint carries), `config.yaml` and `metrics.json`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxid.card import ModelCard
from voxid.checkpoint import model_fingerprint, to_plain
from voxid.config import TrainConfig, save_config
from voxid.errors import ConfigError
from voxid.io import atomic_write


def _features(dataset: Any, frontend: Any) -> list[np.ndarray]:
    """One `(T, F)` array per item; waveform stores go through the MFCC frontend."""
    out = []
    with torch.no_grad():
        for i in range(len(dataset)):
            x, _ = dataset[i]
            out.append((frontend(x[None])[0] if frontend is not None else x).numpy())
    return out


def train_gmm(cfg: TrainConfig, data: Path, out: Path) -> Any:
    """Fit `voxid.models.gmm.GmmClassifier` on the store's training split; a `RunResult`."""
    from voxid._version import __version__
    from voxid.features import build_frontend
    from voxid.models.gmm import GmmClassifier
    from voxid.training.data import open_task, resolve_features
    from voxid.training.final import RunResult, summarize

    if cfg.mode != "identify":
        raise ConfigError("mode: the gmm baseline identifies speakers only (mode: identify)")
    feature_config = resolve_features(cfg)
    task = open_task(cfg, data, feature_config)
    params = {"seed": cfg.seed, **cfg.hparams}
    try:
        clf = GmmClassifier(**params)
    except TypeError as exc:
        raise ConfigError(f"model: {exc}") from None
    frontend = build_frontend(feature_config).eval() if task.waveform else None
    start = time.perf_counter()
    clf.fit(_features(task.train, frontend), task.train.labels)
    seconds = time.perf_counter() - start
    metrics: dict[str, Any] = {
        "model": "gmm",
        "mode": "identify",
        "train_seconds": round(seconds, 3),
    }
    for split, dataset in (("val", task.val), ("test", task.test)):
        if dataset is None:
            continue
        pred = clf.predict(_features(dataset, frontend))
        values = summarize(dataset.labels, pred)
        metrics[split] = {"n": len(dataset), "loss": None, "top1": values["accuracy"],
                          "precision": values["precision"], "recall": values["recall"],
                          "macro_f1": values["f1"]}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    model_path = clf.save(out / "model.npz")
    arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in clf.params_.items()}
    card = ModelCard.from_dict(to_plain({
        "model_name": "gmm",
        "hparams": params,
        "feature_config": feature_config.to_dict(),
        "audio_config": task.info.audio_config,
        "labels": task.labels,
        "mode": "identify",
        "members": [],
        "threshold": None,
        "threshold_kind": None,
        "data_fingerprint": task.info.fingerprint,
        "embedding_dim": 0,
        "train_speakers": task.train_speakers,
        "model_fingerprint": model_fingerprint(arrays),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "voxid_version": __version__,
    }), str(out / "model.json"))  # fmt: skip
    metrics["model_fingerprint"] = card.fingerprint
    description = json.dumps(card.to_dict(), indent=2)
    atomic_write(out / "model.json", lambda tmp: tmp.write_text(description))
    save_config(cfg, out / "config.yaml")
    text = json.dumps(metrics, indent=2)
    atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(text))
    return RunResult(out, model_path, None, None, metrics)
