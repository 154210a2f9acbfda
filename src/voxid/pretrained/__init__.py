"""Models shipped inside the package: the base encoder, usable right after install.

A shipped model is a pair of files here: ``<name>.onnx`` (fp32, what the recogniser,
the server and `listen` run) and ``<name>.pt`` (the same weights stored in float16, a
voxid inference file, for evaluation, calibration, LDA fitting and fine-tuning). Both
give the same embeddings and the same model fingerprint, so speakers enrolled through one
are scored by the other. ``MODEL_CARD.md`` says what the base model was trained on, how,
and how well it does. `make base-model` rebuilds it from ``../shared/data``.

Wherever voxid takes a model (a path), a shipped model's name works too, unless a file or
folder of that name exists in the working directory:

>>> resolve("base", "onnx").name
'base.onnx'
>>> [m.name for m in available()]
['base']
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from voxid.errors import ModelError

__all__ = ["DEFAULT_MODEL", "HERE", "ShippedModel", "available", "is_shipped", "resolve"]

HERE = Path(__file__).resolve().parent
#: The model every command uses when none is given.
DEFAULT_MODEL = "base"
_KINDS = ("onnx", "pt")


@dataclass(frozen=True)
class ShippedModel:
    """One model shipped in the package, as `voxid models` lists it."""

    name: str
    onnx: Path
    torch: Path
    size_mb: float
    description: str
    card: Path | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `--json`."""
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


def _index() -> dict[str, dict[str, Any]]:
    path = HERE / "models.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def available() -> list[ShippedModel]:
    """The shipped models whose files are present, in name order."""
    found = []
    for name, info in sorted(_index().items()):
        onnx, pt = HERE / f"{name}.onnx", HERE / f"{name}.pt"
        if not (onnx.is_file() and pt.is_file()):
            continue
        card = HERE / str(info.get("card", "MODEL_CARD.md"))
        size = (onnx.stat().st_size + pt.stat().st_size) / 2**20
        description = str(info.get("description", ""))
        card_path = card if card.is_file() else None
        found.append(ShippedModel(name, onnx, pt, round(size, 2), description, card_path))
    return found


def resolve(spec: str | os.PathLike | None, kind: str = "onnx") -> Path:
    """The file a model argument means: a shipped model's `kind` file ("onnx" or "pt") for
    its name (or None: the default model), else the path itself.

    A path that exists always wins over a name, so a run folder called `base` is used.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind: one of {_KINDS}, got {kind!r}")
    if spec is None:
        spec = DEFAULT_MODEL
    path = Path(spec)
    if path.exists() or str(spec) not in _index():
        return path
    file = HERE / f"{spec}.{kind}"
    if not file.is_file():
        raise ModelError(
            f"{spec}: the shipped model's file {file.name} is missing from this install "
            "(rebuild it with make base-model, or pass a model path)"
        )
    return file


def is_shipped(path: str | os.PathLike) -> bool:
    """True for a file inside this package: shipped models are never written to."""
    try:
        return Path(path).resolve().parent == HERE
    except OSError:
        return False
