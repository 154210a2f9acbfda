"""Model averaging: a run's model as the mean of its weights at the ends of the schedule's
last epochs (`average_epochs`), as WeSpeaker averages its last checkpoints.

One epoch picked by a noisy validation figure is a draw; the mean of several epochs' weights
lies in a flatter part of the loss and varies less from seed to seed. The running sum lives
in the callback's state, which Lightning keeps in `last.ckpt`, so a resumed run averages
the same epochs as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch


class WeightAverage(L.Callback):
    """Sum the module's weights at the end of each of the last `n` of `epochs` epochs.

    Floating-point tensors are summed in float64 and averaged; integer buffers (BatchNorm's
    batch counts) keep their latest value.
    """

    def __init__(self, n: int, epochs: int):
        self.first = max(epochs - n, 0)
        self.sum: dict[str, torch.Tensor] | None = None
        self.epochs: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Add this epoch's weights when it is one of the averaged epochs (once per epoch)."""
        epoch = int(trainer.current_epoch)
        if epoch < self.first or epoch in self.epochs:
            return
        previous = self.sum or {}
        self.sum = {
            k: v.double() + previous.get(k, 0) if v.is_floating_point() else v.clone()
            for k, v in ((k, v.detach().cpu()) for k, v in pl_module.state_dict().items())
        }
        self.epochs.append(epoch)

    def average(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The mean weights, in the dtypes of the state dict `like` (ValueError: none yet)."""
        if self.sum is None or not self.epochs:
            raise ValueError("no epoch of the averaging window has ended")
        n = len(self.epochs)
        return {k: (v / n).to(like[k].dtype) if v.is_floating_point() else v
                for k, v in self.sum.items()}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """What `last.ckpt` keeps of the average so far."""
        return {"first": self.first, "epochs": list(self.epochs), "sum": self.sum}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the sum of an interrupted run (same window)."""
        self.first = int(state_dict["first"])
        self.epochs = [int(e) for e in state_dict["epochs"]]
        self.sum = state_dict["sum"]


def averaged_checkpoint(last: Path, average: WeightAverage) -> dict[str, Any]:
    """The checkpoint `last` with its weights replaced by the average and no optimizer or
    callback state (a result, not a point to resume from); `averaged_epochs` names the
    epochs averaged (0-based). A run cut short before the window (max_minutes) keeps its
    last epoch's weights, the one epoch averaged."""
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    epochs = list(average.epochs)
    if epochs:
        ckpt["state_dict"] = average.average(ckpt["state_dict"])
    else:
        epochs = [int(ckpt.get("epoch", 0))]
    strip_resume_state(ckpt)
    ckpt["averaged_epochs"] = epochs
    return ckpt


def strip_resume_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Drop a Lightning checkpoint's optimizer, scheduler, callback and loop state in place
    (weights made by averaging are a result, not a point to resume from); `ckpt`."""
    for key in ("optimizer_states", "lr_schedulers", "callbacks", "loops"):
        ckpt.pop(key, None)
    return ckpt
