"""Model soups: one model whose weights are the mean of several fine-tuned runs' (`soup: N`).

Runs fine-tuned from the same pretrained encoder with different seeds land in one basin of
the loss, and the mean of their weights scores better than most of them alone while
costing one model at inference (Wortsman et al., 2022, "Model soups"). Their heads must
start alike too, or each run's class directions are arbitrary and the mean of them none:
a soup needs `init` and `head_init: imprint` (`voxid.training.imprint`). Measured on P-B
(stage 7 base, 16 epochs, scores AS-normed against the seen outsiders): two random-head
runs averaged let 17.8 % of never-seen outsiders in at FRR 2 %, against 7.8 % and 3.3 % for
the runs alone; two imprinted runs averaged 1.75 %, against 4.25 % and 0.5 %. A soup lands
near the mean of its members, not above the best (seeds 0 and 2: 6.25 %, against 4.25 and
6.25 %): it buys a steadier result, not a better one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from voxid.errors import ModelError
from voxid.training.average import strip_resume_state

__all__ = ["soup_checkpoint"]


def soup_checkpoint(paths: Sequence[Path]) -> dict[str, Any]:
    """The first checkpoint of `paths` with its weights the mean of all of theirs.

    Floating-point tensors are averaged in float64 and stored in their own dtype; integer
    buffers (BatchNorm's batch counts) keep the first run's. Optimizer, scheduler and
    callback state are dropped: a soup is a result, not a point to resume from.
    `souped_from` names the checkpoints. Raises `ModelError` when the runs' networks or
    classes differ.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for i, w in enumerate((1.0, 3.0)):
    ...     torch.save({"state_dict": {"w": torch.tensor([w]), "n": torch.tensor(i)},
    ...                 "voxid": {"labels": ["a"]}}, d / f"{i}.ckpt")
    >>> soup = soup_checkpoint([d / "0.ckpt", d / "1.ckpt"])
    >>> soup["state_dict"]["w"].item(), soup["state_dict"]["n"].item()
    (2.0, 0)
    """
    if not paths:
        raise ModelError("soup: no checkpoints to average")
    first = torch.load(paths[0], map_location="cpu", weights_only=True)
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first["state_dict"].items()}
    for path in paths[1:]:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("voxid", {}).get("labels") != first.get("voxid", {}).get("labels"):
            raise ModelError(f"soup: {path} was trained on other classes than {paths[0]}")
        state = ckpt["state_dict"]
        if {k: tuple(v.shape) for k, v in state.items()} != {
            k: tuple(v.shape) for k, v in first["state_dict"].items()
        }:
            raise ModelError(f"soup: {path} holds another network than {paths[0]}")
        for k, v in state.items():
            if v.is_floating_point():
                sums[k] = sums[k] + v.double()
    n = len(paths)
    first["state_dict"] = {
        k: (sums[k] / n).to(v.dtype) if v.is_floating_point() else v
        for k, v in first["state_dict"].items()
    }
    strip_resume_state(first)
    first["souped_from"] = [str(p) for p in paths]
    return first
