"""Train a speaker model from a store: `train(cfg, data, out_dir) -> RunResult`.

The Lightning side (Trainer, callbacks, logger) lives here and in `voxid.training.module`;
nothing outside `voxid.training` imports Lightning (a test checks it). A run folder ends up
holding `best.ckpt` and `last.ckpt` (Lightning, resumable), `model.pt` (best weights, for
inference), `config.yaml` (the resolved recipe), `tb/` (TensorBoard) and `metrics.json`.
The GMM baseline (`model: gmm`) trains through the same call, without Lightning.
`RunResult` lives in `voxid.training.final` and `resolve_features` in `voxid.training.data`
(the GMM baseline uses both, and this module imports it); both are re-exported here.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import torch

from voxid.card import ModelCard
from voxid.checkpoint import (
    load_checkpoint,
    make_card,
    read_card,
    read_checkpoint,
    save_inference_file,
    save_threshold,
)
from voxid.config import MONITORS, PRECISIONS, TrainConfig, save_config
from voxid.errors import ConfigError, DataError, ModelError
from voxid.io import atomic_write
from voxid.training.data import resolve_features
from voxid.training.final import RunResult

__all__ = [
    "RunResult",
    "atomic_checkpoint_io",
    "resolve_features",
    "resolve_precision",
    "save_checkpoint_atomically",
    "train",
]

# Lightning's noise that says nothing about the run: the run folder holds config.yaml before
# the first checkpoint, and two deprecations inside Lightning itself.
_QUIET = (
    r"Checkpoint directory .* exists and is not empty",
    r".*isinstance\(treespec, LeafSpec\)",
    r".*all_gather is deprecated",
)


#: The precisions `TrainConfig` accepts (`voxid.config.PRECISIONS`, less `auto`).
Precision = Literal["32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true"]


def resolve_precision(cfg: TrainConfig) -> Precision:
    """`cfg.precision`, with `auto` meaning bf16/16 mixed precision on a GPU, 32 elsewhere."""
    if cfg.precision != "auto":
        if cfg.precision not in get_args(Precision):
            raise ConfigError(f"precision: must be one of {PRECISIONS}, got {cfg.precision!r}")
        return cast(Precision, cfg.precision)
    if cfg.accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def is_primary_process() -> bool:
    """False in the extra processes of a multi-process (DDP, torchrun, SLURM) launch."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(var, "0") or 0) == 0 for var in ranks)


def save_checkpoint_atomically(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """`torch.save` to `.<name>.<pid>.tmp` beside `path`, then rename it over `path`.

    A kill at any moment leaves the previous checkpoint whole; Lightning's own writer stages
    the file in TMPDIR and, from another filesystem, copies it over the target, so a kill
    there leaves it empty. Orphans of writers that died mid-save are removed after a save.
    """
    path = Path(path)
    # The pid in the name lets `_remove_orphans` tell a dead writer's leftovers.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    atomic_write(path, lambda staged: torch.save(checkpoint, staged), tmp=tmp, fsync=True)
    _remove_orphans(path)
    return path


def _remove_orphans(path: Path) -> None:
    from voxid.data.prepare import pid_alive

    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_checkpoint_io() -> Any:
    """A Lightning `CheckpointIO` whose saves go through `save_checkpoint_atomically`."""
    return _atomic_io_class()()


@functools.cache
def _atomic_io_class() -> type:
    # Built on first use: importing Lightning takes seconds, and voxid.training.run is imported by
    # commands (the GMM baseline, sweeps) that may never need it.
    from lightning.fabric.plugins import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """TorchCheckpointIO with an atomic save in the checkpoint's own folder."""

        def save_checkpoint(
            self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
        ) -> None:
            if storage_options is not None:
                raise TypeError("voxid's checkpoint writer takes no storage_options")
            save_checkpoint_atomically(checkpoint, path)

    return AtomicCheckpointIO


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "last.ckpt").is_file():
            raise ConfigError(f"{out}: no last.ckpt to resume from")
    elif any((out / n).exists() for n in ("best.ckpt", "last.ckpt", "model.pt", "model.npz")):
        raise ConfigError(f"{out}: already holds a run; pass --resume or choose another folder")


@dataclass
class _ResumePoint:
    """What a resume needs from last.ckpt, read once (the file also holds optimizer state)."""

    card: ModelCard
    epoch: int
    shapes: dict[str, tuple[int, ...]]


def _read_resume_point(cfg: TrainConfig, out: Path) -> _ResumePoint:
    ckpt = read_checkpoint(out / "last.ckpt")
    card = ModelCard.from_dict(ckpt["voxid"], str(out / "last.ckpt"))
    if card.model.name != cfg.model:
        raise ConfigError(f"model: {out} was trained as {card.model.name!r}, not {cfg.model!r}")
    shapes = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if torch.is_tensor(v)}
    return _ResumePoint(card, int(ckpt.get("epoch", -1)), shapes)


def _brief(values: list[Any], n: int = 4) -> str:
    shown = ", ".join(map(str, values[:n]))
    return f"[{shown}{', ...' if len(values) > n else ''}] ({len(values)})"


def _check_resume(saved: _ResumePoint, out: Path, data: Path, want: ModelCard, module: Any) -> None:
    """Refuse to resume `out` with another store or another network than last.ckpt's.

    `want` is the card this recipe and store would write (`make_card`). Lightning
    would otherwise continue on other speakers without a word (their labels taken for the
    old ones), or fail deep in `load_state_dict` after config.yaml was rewritten.
    """
    old = saved.card
    if old.data_fingerprint not in (None, want.data_fingerprint):
        raise DataError(
            f"{data}: not the store {out} was trained on (data fingerprint "
            f"{str(want.data_fingerprint)[:12]}, last.ckpt has "
            f"{str(old.data_fingerprint)[:12]}); resume with that store, or train into a "
            "new folder"
        )
    if old.labels != want.labels:
        raise ConfigError(
            f"speakers: {out} was trained on the classes {_brief(list(old.labels))}, "
            f"this recipe gives {_brief(list(want.labels))}; resume with the run's speakers, "
            "mode and members"
        )
    for key, was, now in (
        ("mode", old.mode, want.mode),
        ("members", list(old.members), list(want.members)),
        ("auth_scoring", old.auth_scoring, want.auth_scoring),
    ):
        if was != now:
            raise ConfigError(
                f"{key}: {out} was trained with {was!r}, this recipe has "
                f"{now!r}; resume with the run's own config.yaml"
            )
    old_params, new_params = old.model.hparams, want.model.hparams
    for key in sorted(set(old_params) | set(new_params)):
        if old_params.get(key) != new_params.get(key):
            raise ConfigError(
                f"model.{key}: {out} was trained with {old_params.get(key)!r}, this recipe "
                f"has {new_params.get(key)!r}; resume with the run's own config.yaml"
            )
    if old.feature_dict != want.feature_dict:
        raise ConfigError(f"features: {out} was trained on other features than this recipe's")
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    for key in sorted(set(saved.shapes) | set(shapes)):
        if saved.shapes.get(key) != shapes.get(key):
            held = saved.shapes.get(key, "nothing")
            raise ConfigError(
                f"{out}: last.ckpt holds another network than this recipe builds ({key}: "
                f"{held} there, {shapes.get(key, 'nothing')} here; distill_targets and "
                "the model settings must be the run's)"
            )


def train(
    cfg: TrainConfig, data: str | Path, out_dir: str | Path, resume: bool = False,
    *, progress: bool = True,
) -> RunResult:  # fmt: skip
    """Train `cfg` on the store `data` into the run folder `out_dir`.

    Arguments:
        cfg: the recipe (`voxid.config.load_config`).
        data: an HDF5 store from `voxid prepare`: features equal to the model's, or
            waveforms at the model's sample rate.
        out_dir: the run folder (created).
        resume: continue from `out_dir/last.ckpt` (epoch, optimizer and scheduler state).
        progress: show the rich progress bar and model summary.
    """
    cfg = TrainConfig.from_dict(cfg.to_dict())  # a validated copy the run may not alter
    out = Path(out_dir)
    # Before any training: the projection to keep is read only when the run has finished.
    if cfg.keep_lda and cfg.init and read_card(cfg.init).scoring.projection is None:
        raise ConfigError(f"keep_lda: {cfg.init} has no LDA projection to keep")
    if cfg.soup > 1:
        return _train_soup(cfg, Path(data), out, resume, progress)
    if cfg.model == "gmm" and resume:
        raise ConfigError("resume: the gmm baseline trains in one fit; there is nothing to resume")
    primary = is_primary_process()
    if primary:
        _check_out_dir(out, resume)
    saved = _read_resume_point(cfg, out) if resume else None
    if cfg.model == "gmm":
        from voxid.training.gmm import train_gmm

        return train_gmm(cfg, Path(data), out)

    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from voxid.models import build_model
    from voxid.training.data import open_task
    from voxid.training.module import SpeakerTask

    feature_config = resolve_features(cfg)
    task = open_task(cfg, data, feature_config)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg.model, len(task.labels), feature_config, **cfg.hparams)
    if cfg.init and not resume:  # a resumed run has its own weights in last.ckpt
        init_from(model, cfg.init)
    check_auth_scoring(cfg, model)
    meta = {
        "mode": cfg.mode,
        "members": cfg.members,
        "auth_scoring": cfg.auth_scoring if cfg.mode == "authenticate" else None,
        "data_fingerprint": task.info.fingerprint,
        "audio_config": inherited_audio_config(task.info.audio_config, cfg.init),
        "train_speakers": task.train_speakers,
        "init": cfg.init,
    }
    weights = task.class_weights() if cfg.class_weights and not cfg.balanced else None
    heldout = task.loader("heldout", cfg) if task.heldout is not None else None
    module = SpeakerTask(
        model, cfg, task.labels, class_weights=weights, waveform=task.waveform, meta=meta,
        heldout=heldout, teacher_dim=task.targets[0].shape[1] if task.targets else None,
    )  # fmt: skip
    if cfg.head_init == "imprint" and not resume:
        from voxid.training.imprint import imprint_head

        imprint_head(model, task.loader("train", cfg), module.features)
    if saved is not None:  # before anything in the run folder is written
        _check_resume(saved, out, Path(data), make_card(model, task.labels, **meta), module)
    if primary:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    mode = MONITORS[cfg.monitor]
    averaging = None
    if cfg.average_epochs:
        from voxid.training.average import WeightAverage

        # The run's model is the mean of the last epochs, written to best.ckpt after fit:
        # no epoch is chosen by the monitor, so Lightning keeps last.ckpt only.
        averaging = WeightAverage(cfg.average_epochs, cfg.epochs)
    checkpoints = ModelCheckpoint(
        dirpath=out, filename="best", monitor=None if averaging else cfg.monitor, mode=mode,
        save_top_k=0 if averaging else 1, save_last=True, auto_insert_metric_name=False,
        enable_version_counter=False,
    )  # fmt: skip
    callbacks: list[Any] = [checkpoints]
    if averaging is not None:
        callbacks.append(averaging)
    early = None
    if cfg.patience > 0:
        early = EarlyStopping(cfg.monitor, cfg.min_delta, cfg.patience, mode=mode)
        callbacks.append(early)
    if progress:
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        default_root_dir=out,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg),
        max_epochs=cfg.epochs,
        max_time=dt.timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        callbacks=callbacks,
        plugins=[atomic_checkpoint_io()],
        logger=TensorBoardLogger(out, name="tb", version="", default_hp_metric=False),
        log_every_n_steps=cfg.log_every_n_steps,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches,
        num_sanity_val_steps=0,
        # Deterministic kernels where they exist; warn (not fail) where a GPU op has none.
        deterministic="warn" if cfg.deterministic else False,
        enable_progress_bar=progress,
        enable_model_summary=progress,
    )
    # Lightning stores the finished epoch (0-based); a resumed fit starts one later.
    first_epoch = saved.epoch + 1 if saved is not None else 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        trainer.fit(
            module,
            task.loader("train", cfg, shuffle=True),
            task.loader("val", cfg),
            ckpt_path=out / "last.ckpt" if resume else None,
        )
    seconds = time.perf_counter() - start
    # Not checkpoints.best_model_path: after a resume of a moved run folder it can still
    # name the old folder, and the threshold must never be written there.
    best = out / "best.ckpt"
    if not trainer.is_global_zero:
        return RunResult(out, out / "model.pt", best, out / "last.ckpt")
    averaged = None
    if averaging is not None and (out / "last.ckpt").is_file():
        from voxid.training.average import averaged_checkpoint

        ckpt = averaged_checkpoint(out / "last.ckpt", averaging)
        save_checkpoint_atomically(ckpt, best)
        averaged = ckpt["averaged_epochs"]
    if not best.is_file():
        raise ModelError(
            f"{out}: training stopped before its first validation (max_minutes="
            f"{cfg.max_minutes}, limit_train_batches={cfg.limit_train_batches}); nothing to keep"
        )
    taken = _take_from_init(cfg, best)
    device = trainer.strategy.root_device.type
    epochs = int(trainer.current_epoch) - first_epoch
    fit: dict[str, Any] = {
        "epochs_run": int(trainer.current_epoch), "epochs_this_run": epochs,
        "train_seconds": round(seconds, 3),
        "stopped_early": bool(early is not None and early.stopped_epoch > 0),
    }  # fmt: skip
    if averaged is not None:
        fit["averaged_epochs"] = averaged
    if taken is not None:
        fit["from_init"] = taken
    items = task.train.base.items
    n_items = len(task.train)
    fit["train_items_per_epoch"] = n_items
    if seconds > 0 and epochs > 0:
        fit["train_items_per_second"] = round(n_items * epochs / seconds, 2)
    if "seconds" in items and seconds > 0 and epochs > 0:
        audio = float(items["seconds"].sum())
        fit["train_audio_seconds_per_epoch"] = round(audio, 3)
        fit["train_realtime_factor"] = round(audio * epochs / seconds, 2)
    return _finish(cfg, task, out, best, device, fit)


def _train_soup(cfg: TrainConfig, data: Path, out: Path, resume: bool, progress: bool) -> RunResult:
    """Train `cfg.soup` runs (seeds `cfg.seed` up) into `out/seed<K>` and finish `out` with
    the mean of their best weights (`voxid.training.soup`).

    A resumed soup skips the members that finished (their `model.pt`), resumes the one cut
    short and starts the rest; the soup itself is rebuilt from the members' `best.ckpt`.
    """
    from voxid.training.data import open_task
    from voxid.training.soup import soup_checkpoint

    seeds = [cfg.seed + k for k in range(cfg.soup)]
    members = [out / f"seed{seed}" for seed in seeds]
    primary = is_primary_process()
    if resume and not (out / "config.yaml").is_file():
        raise ConfigError(f"{out}: no soup to resume (no config.yaml)")
    if not resume:
        _check_out_dir(out, False)
        if any(m.exists() for m in members):
            raise ConfigError(f"{out}: already holds a run; pass --resume or choose another folder")
    if primary:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    results = []
    for seed, member in zip(seeds, members, strict=True):
        # The members stay as trained: the soup takes from the starting model once.
        one = TrainConfig.from_dict(
            {**cfg.to_dict(), "seed": seed, "soup": 1, "wise": 1.0, "keep_lda": False}
        )
        if (member / "model.pt").is_file() and (member / "metrics.json").is_file():
            metrics = json.loads((member / "metrics.json").read_text())
            results.append(RunResult(member, member / "model.pt", member / "best.ckpt",
                                     member / "last.ckpt", metrics))  # fmt: skip
            continue
        again = (member / "last.ckpt").is_file()
        results.append(train(one, data, member, resume=again, progress=progress))
    if not primary:
        return RunResult(out, out / "model.pt", out / "best.ckpt", None)
    best = out / "best.ckpt"
    save_checkpoint_atomically(soup_checkpoint([r.out_dir / "best.ckpt" for r in results]), best)
    taken = _take_from_init(cfg, best)
    task = open_task(cfg, data, resolve_features(cfg))
    device = "cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    fit: dict[str, Any] = {
        "best_epoch": None,  # each member has its own (`members`)
        "souped_seeds": seeds,
        "train_seconds": round(sum(r.metrics.get("train_seconds", 0.0) for r in results), 3),
        "members": {
            f"seed{seed}": {key: r.metrics.get(key) for key in ("best_epoch", "epochs_run")}
            | {"val_top1": r.metrics.get("val", {}).get("top1")}
            for seed, r in zip(seeds, results, strict=True)
        },
    }
    if taken is not None:
        fit["from_init"] = taken
    return _finish(cfg, task, out, best, device, fit)


def _take_from_init(cfg: TrainConfig, best: Path) -> dict[str, Any] | None:
    """Apply `wise` and `keep_lda` to the run's best weights (`voxid.training.wise`)."""
    if cfg.init is None or (cfg.wise >= 1.0 and not cfg.keep_lda):
        return None
    from voxid.training.wise import take_from_init

    return take_from_init(best, cfg.init, cfg.wise, cfg.keep_lda)


def init_from(model: Any, source: str) -> None:
    """Copy the front-end and encoder weights of the model `source` (a shipped model's name,
    a run or a model file) into `model`; its head stays new. Raises `ConfigError` when the
    architectures or features differ."""
    from voxid.checkpoint import load_checkpoint
    from voxid.models.base import SpeakerModel

    _, pretrained = load_checkpoint(source)
    if not isinstance(pretrained, SpeakerModel) or not pretrained.is_embedding_model:
        raise ConfigError(f"init: {source} is no embedding model to start from")
    if pretrained.name != model.name:
        raise ConfigError(
            f"init: {source} is a {pretrained.name} model; this recipe trains {model.name} "
            "(use a recipe of the same architecture, e.g. voxid train base)"
        )
    if pretrained.feature_config.to_dict() != model.feature_config.to_dict():
        raise ConfigError(f"init: {source} was trained on other features than this recipe's")
    encoder = {k: v for k, v in pretrained.encoder.state_dict().items()}
    try:
        model.encoder.load_state_dict(encoder, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"init: {source}'s encoder does not fit this recipe's (set the same model sizes): "
            f"{first}"
        ) from None
    model.frontend.load_state_dict(pretrained.frontend.state_dict())


def inherited_audio_config(audio_config: dict | None, init: str | None) -> dict | None:
    """The store's audio settings, with the short-speech rule of the model a run starts from.

    The base model embeds speech under 2 s repeated to 2 s (its card's
    `audio_config.chunk.min_input_seconds`, measured better on every P-Z set), and a model
    fine-tuned from it has the same network and input length, so it keeps that rule unless
    its store sets one, or its chunks are longer than the rule's length (the card would be
    invalid). Read on resume too, so a resumed run writes the same card.
    """
    if not init or audio_config is None:
        return audio_config
    source = read_card(init).audio
    shortest = source.min_input_seconds if source is not None else None
    chunk = dict(audio_config.get("chunk") or {})
    if shortest is None or chunk.get("min_input_seconds") is not None:
        return audio_config
    if float(chunk.get("seconds") or 0) > shortest:
        return audio_config
    return {**audio_config, "chunk": {**chunk, "min_input_seconds": shortest}}


def check_auth_scoring(cfg: TrainConfig, model: Any) -> None:
    """Refuse `auth_scoring: speakers` for a model without embeddings and cosine class weights."""
    if cfg.mode != "authenticate" or cfg.auth_scoring != "speakers":
        return
    if not getattr(model, "is_embedding_model", False) or not hasattr(model.head, "cosine"):
        raise ConfigError(
            f"auth_scoring: 'speakers' scores by cosine to class weights, and {cfg.model} is a "
            "plain softmax classifier; use auth_scoring=binary"
        )


def _finish(
    cfg: TrainConfig, task: Any, out: Path, best: Path, device: str, fit: dict
) -> RunResult:
    """Pick the threshold, score val/test with the best weights, write model.pt and metrics."""
    from voxid.training.final import (
        authentication_metrics,
        choose_threshold,
        classification_metrics,
        predict,
    )

    raw = read_checkpoint(best)
    card, model = load_checkpoint(best)
    metrics: dict[str, Any] = {"model": cfg.model, "mode": cfg.mode, "monitor": cfg.monitor,
                               "best_epoch": int(raw.get("epoch", -1)), **fit}  # fmt: skip
    threshold_kind = "member_cosine" if cfg.auth_scoring == "speakers" else "p_member"
    val = predict(model, task, "val", cfg, device)
    metrics["val"] = classification_metrics(val)
    if task.heldout is not None:
        from voxid.training.batch import InputPipeline
        from voxid.training.final import heldout_eer

        inputs = InputPipeline(model, cfg, task.waveform)
        metrics["heldout"] = {
            "eer": heldout_eer(model, task.loader("heldout", cfg), inputs, device),
            "speakers": len(set(task.heldout.speakers)),
            "items": len(task.heldout),
        }
    threshold = None
    if cfg.mode == "authenticate":
        threshold = choose_threshold(val, cfg.target_far)
        card = card.with_threshold(threshold, threshold_kind)
        metrics.update(threshold=threshold, target_far=cfg.target_far)
        metrics["val"]["authentication"] = authentication_metrics(
            val, threshold, task.train_speakers
        )
    if task.test is not None:
        test = predict(model, task, "test", cfg, device)
        metrics["test"] = classification_metrics(test)
        if threshold is not None:
            metrics["test"]["authentication"] = authentication_metrics(
                test, threshold, task.train_speakers
            )
    model_path = save_inference_file(out / "model.pt", model.cpu(), card)
    if threshold is not None:
        save_threshold(best, threshold, threshold_kind)
    metrics["model_fingerprint"] = read_card(model_path).fingerprint
    text = json.dumps(metrics, indent=2)
    atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(text))
    return RunResult(out, model_path, best, out / "last.ckpt", metrics)
