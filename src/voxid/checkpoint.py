"""Self-describing checkpoints: read, write and update them without Lightning.

Every checkpoint voxid writes (Lightning's `best.ckpt` / `last.ckpt` and the inference file
`model.pt`) is a dict of plain types and tensors: a `"voxid"` dict that says how to rebuild
the model (name, hyper-parameters, features, labels, mode, threshold...: a
`voxid.card.ModelCard`, `load_checkpoint` and `read_card` return it typed) and the weights
in `"state_dict"` under keys prefixed `model.`. Everything loads with
`torch.load(weights_only=True)`, so a checkpoint from elsewhere can never run code.

A GMM run (`model.npz` + `model.json`) is not a torch model; `load_checkpoint` returns its
`GmmClassifier` in place of a `SpeakerModel`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxid.card import ModelCard
from voxid.errors import ModelError
from voxid.io import atomic_write

#: The files a run folder may hold, in the order `resolve_run` prefers them.
RUN_FILES = ("best.ckpt", "model.pt", "last.ckpt", "model.npz")
PREFIX = "model."


def to_plain(value: Any, key: str = "meta") -> Any:
    """Turn numpy scalars, tuples and paths into plain Python so `weights_only` can load them.

    >>> to_plain({"a": (1, np.float32(0.5)), "b": None})
    {'a': [1, 0.5], 'b': None}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise ModelError(f"{key}: cannot store a {type(value).__name__} in a checkpoint")


def model_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short sha256 over the names, dtypes, shapes and bytes of a model's weights.

    Keys are taken without the `model.` prefix, so a Lightning checkpoint and the `model.pt`
    holding the same weights share a fingerprint.

    >>> a = model_fingerprint({"w": torch.ones(2)})
    >>> a == model_fingerprint({"model.w": torch.ones(2)})
    True
    >>> a == model_fingerprint({"w": torch.zeros(2)})
    False
    """
    digest = hashlib.sha256()
    tensors = {k.removeprefix(PREFIX): v for k, v in state_dict.items()}
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def make_meta(model: Any, labels: Iterable[str], **fields: Any) -> dict[str, Any]:
    """The `"voxid"` dict that makes a checkpoint describe itself: `make_card(...).to_dict()`."""
    return make_card(model, labels, **fields).to_dict()


def make_card(
    model: Any,
    labels: Iterable[str],
    *,
    mode: str = "identify",
    members: Iterable[str] = (),
    auth_scoring: str | None = None,
    threshold: float | None = None,
    threshold_kind: str | None = None,
    data_fingerprint: str | None = None,
    audio_config: Mapping[str, Any] | None = None,
    train_speakers: Iterable[str] | None = None,
    hparams: Mapping[str, Any] | None = None,
    init: str | None = None,
) -> ModelCard:
    """The `ModelCard` of a model about to be saved, checked as a card read from a file is
    (the layout is `ModelCard`'s; this dict only gathers the fields).

    Arguments:
        model: the `SpeakerModel` (name, feature config and embedding size are read from it).
        labels: speaker names by class index (`["outsider", "member"]` for the binary
            authentication head).
        auth_scoring: how an authentication model scores members (`binary` or `speakers`,
            see `TrainConfig`); None to identify.
        hparams: the keyword arguments `build_model` needs; defaults to `model.hparams`.
        train_speakers: every speaker seen in training, so evaluation can tell seen from
            never-seen outsiders.
        init: the model a fine-tuned run started from (`TrainConfig.init`), or None.
    """
    from voxid._version import __version__

    params = dict(model.hparams if hparams is None else hparams)
    for key in ("n_classes", "feature_config", "name"):
        params.pop(key, None)
    labels = list(labels)
    meta = {
        "model_name": model.name,
        "hparams": params,
        "feature_config": model.feature_config.to_dict(),
        "audio_config": dict(audio_config or {}),
        "labels": labels,
        "mode": mode,
        "members": list(members),
        "auth_scoring": auth_scoring,
        "threshold": None if threshold is None else float(threshold),
        "threshold_kind": threshold_kind,
        "data_fingerprint": data_fingerprint,
        "embedding_dim": int(model.embedding_dim),
        "train_speakers": list(labels if train_speakers is None else train_speakers),
        "init": init,
        "model_fingerprint": model_fingerprint(model.state_dict()),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "voxid_version": __version__,
    }
    return ModelCard.from_dict(to_plain(meta), f"{model.name} model")


def resolve_run(path: str | os.PathLike[str] | None) -> Path:
    """The checkpoint file a path means: a file as is, or the best file in a run folder.

    A run folder gives `best.ckpt`, else `model.pt`, else `last.ckpt`, else `model.npz`;
    a shipped model's name (`base`, or None) its `.pt` file (`voxid.pretrained`).
    """
    from voxid.pretrained import resolve

    path = resolve(path, "pt")
    if path.is_dir():
        for name in RUN_FILES:
            if (path / name).is_file():
                return path / name
        raise ModelError(
            f"{path}: no checkpoint in this folder (looked for {', '.join(RUN_FILES)})"
        )
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint")
    return path


#: How torch's files begin: a zip archive (torch >= 1.6), or a pickle (the legacy format).
_ZIP_MAGIC = b"PK\x03\x04"
#: torch's boilerplate around a weights_only refusal; the line that is left is its cause.
_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation")


def _is_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return False
        text = head[: exc.start].decode("utf-8")  # a character cut by the read limit
    return bool(text) and all(c.isprintable() or c in "\t\r\n" for c in text)


def _weights_only_cause(message: str) -> str:
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    causes = [ln for ln in lines if not ln.lower().startswith(_BOILERPLATE)]
    cause = causes[0] if causes else lines[-1] if lines else "no reason given"
    return cause.removeprefix("Trying to load ").rstrip(".")


def _load_failure(path: str | Path, exc: BaseException) -> str:
    """Why `torch.load(path, weights_only=True)` raised `exc`, in words: not a torch file,
    an empty or truncated (torn) file, or a refusal of weights_only with its cause.

    Torch's own messages run over many lines and blame weights_only even for random
    bytes, so the file's first bytes decide what kind of failure this is.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    message = str(exc).strip()
    first = message.splitlines()[0].strip() if message else type(exc).__name__
    if not head:
        return "empty file (torn: a save or copy was cut off)"
    if not (head.startswith(_ZIP_MAGIC) or _is_pickle(head)):
        if _looks_like_text(head):
            return "not a torch checkpoint (a text file)"
        return f"not a torch checkpoint (unknown format, starts with 0x{head[:8].hex()})"
    if "weights only load failed" in message.lower():
        cause = _weights_only_cause(message)
        if not cause.startswith("Unsupported operand"):
            return (
                f"refused by weights_only loading ({cause}); loading it fully can result in "
                "arbitrary code execution, so voxid never does"
            )
        return f"corrupt torch file (its pickle data is broken: {cause})"
    if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        # Cut before its central directory (at the end); miniz then fails in various ways.
        size = Path(path).stat().st_size
        return (
            f"truncated or torn torch file (zip archive of {size} bytes without its "
            "central directory)"
        )
    if _is_pickle(head) and isinstance(exc, (EOFError, IndexError, pickle.UnpicklingError)):
        # The legacy format has no index to check; a pickle cut short fails to unpickle.
        return f"truncated or corrupt torch file (its pickle data breaks off: {first[:200]})"
    return f"unreadable torch file ({first[:300]})"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw checkpoint dict (`"voxid"` meta and `"state_dict"`), loaded with weights_only."""
    path = resolve_run(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or torn files
        raise ModelError(f"{path}: {_load_failure(path, exc)}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("voxid"), dict):
        raise ModelError(f"{path}: not a voxid checkpoint (no 'voxid' description)")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise ModelError(f"{path}: checkpoint holds no weights ('state_dict')")
    for key in ("model_name", "labels", "feature_config", "hparams"):
        if key not in ckpt["voxid"]:
            raise ModelError(f"{path}: checkpoint description lacks '{key}'")
    return ckpt


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The `ModelCard` of a checkpoint (file or run folder; a GMM run's `model.json`)."""
    path = resolve_run(path)
    if path.suffix == ".npz":
        return _gmm_card(path)
    return ModelCard.from_dict(read_checkpoint(path)["voxid"], str(path))


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[ModelCard, Any]:
    """Load a checkpoint (file or run folder) as `(card, model)`; the model is in eval mode.

    For a GMM run (`model.npz`) the model is a `voxid.models.gmm.GmmClassifier`.
    Raises `ModelError` naming the file when it is corrupt, foreign or does not fit.
    """
    path = resolve_run(path)
    if path.suffix == ".npz":
        return _load_gmm(path)
    ckpt = read_checkpoint(path)
    card = ModelCard.from_dict(ckpt["voxid"], str(path))
    from voxid.models import build_model

    try:
        model = build_model(
            str(card.model.name),
            n_classes=len(card.labels),
            feature_config=card.feature_config(),
            **card.model.hparams,
        )
    except Exception as exc:
        raise ModelError(f"{path}: cannot rebuild model '{card.model.name}' ({exc})") from None
    weights = {k[len(PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{path}: weights do not fit the described model ({first})") from None
    model.to(map_location).eval()
    return card, model


def _gmm_card(path: Path) -> ModelCard:
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: missing or unreadable GMM description ({exc})") from None
    return ModelCard.from_dict(meta, str(meta_path))


def _load_gmm(path: Path) -> tuple[ModelCard, Any]:
    from voxid.models.gmm import GmmClassifier

    card = _gmm_card(path)
    try:
        model = GmmClassifier.load(path)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable GMM model ({exc})") from None
    return card, model


def save_inference_file(
    path: str | Path, model: torch.nn.Module, card: ModelCard | Mapping[str, Any]
) -> Path:
    """Write the self-describing inference file (`model.pt`) atomically.

    `card` is a `ModelCard` (or its stored dict); the file's gets the fingerprint of these
    weights.
    """
    if not isinstance(card, ModelCard):
        card = ModelCard.from_dict(to_plain(dict(card)), str(path))
    state = {PREFIX + k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    meta = dataclasses.replace(card, fingerprint=model_fingerprint(state)).to_dict()
    return atomic_write(path, lambda tmp: torch.save({"voxid": meta, "state_dict": state}, tmp))


def refuse_shipped(path: str | os.PathLike[str], action: str) -> None:
    """Raise `ModelError` when `path` is a model shipped in the package: never written to."""
    from voxid.pretrained import is_shipped

    if is_shipped(path):
        raise ModelError(
            f"{Path(path).name}: the shipped model is read-only; to {action}, work on a copy "
            "(voxid calibrate --out my_model.pt, or copy the file from voxid models)"
        )


def save_threshold(
    path: str | os.PathLike[str], threshold: float | None, kind: str | None
) -> list[Path]:
    """Store a decision threshold (and what score it applies to) in checkpoints, in place.

    For a run folder, both `model.pt` and `best.ckpt` are updated (those that exist); a GMM
    run's `model.json` likewise. Returns the files written.
    """
    path = Path(path)
    if path.is_dir():
        targets = [
            path / n for n in ("model.pt", "best.ckpt", "model.json") if (path / n).is_file()
        ]
        if not targets:
            raise ModelError(f"{path}: no checkpoint in this folder to store a threshold in")
    else:
        targets = [path.with_suffix(".json") if path.suffix == ".npz" else resolve_run(path)]
    for target in targets:
        refuse_shipped(target, "store a threshold")
    value = None if threshold is None else float(threshold)
    if value is not None and not np.isfinite(value):
        raise ModelError(f"threshold: must be a finite number, got {threshold}")
    for target in targets:
        if target.suffix == ".json":
            card = _gmm_card(target.with_suffix(".npz")).with_threshold(value, kind)
            text = json.dumps(card.to_dict(), indent=2)
            atomic_write(target, partial(Path.write_text, data=text))
            continue
        # Lightning's own entries (optimizer, loops, callbacks) are plain too, so they survive.
        ckpt = read_checkpoint(target)
        card = ModelCard.from_dict(ckpt["voxid"], str(target)).with_threshold(value, kind)
        ckpt["voxid"] = card.to_dict()
        atomic_write(target, partial(torch.save, ckpt))
    return targets


def store_projection(targets: list[Path], model: Any, projection: dict[str, Any]) -> float | None:
    """Write `model`'s weights, projection included, into each checkpoint of `targets`
    (atomically), with `projection` as the card's record of it; the calibrated threshold
    on cosine or AS-norm scores, which no longer applies, is cleared and returned."""
    from voxid.card import ModelSpec

    state = {PREFIX + k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    cleared = None
    for target in targets:
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
        desc = dataclasses.replace(
            desc,
            model=ModelSpec(desc.model.name, hparams, int(model.embedding_dim)),
            fingerprint=model_fingerprint(state),
            scoring=dataclasses.replace(desc.scoring, projection=projection),
        )
        ckpt["voxid"] = desc.to_dict()
        atomic_write(target, partial(torch.save, ckpt))
    return cleared
