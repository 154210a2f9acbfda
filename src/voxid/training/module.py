"""The LightningModule that trains a `SpeakerModel` (Lightning is imported only in training).

One module serves both modes: N-way identification over the training speakers, and the
binary member-vs-outsider authentication of the CNN-RNN paper (class-weighted loss). It
takes batches from feature stores or from waveform stores (then it runs the model's own
frontend on the batch, so any model trains from one waveform store).
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from voxid.checkpoint import make_card
from voxid.config import TrainConfig
from voxid.models.base import SpeakerModel
from voxid.training.batch import InputPipeline
from voxid.training.final import heldout_eer, mc_spread, summarize


class SpeakerTask(L.LightningModule):
    """Training, validation and checkpoint description for one `SpeakerModel`.

    Arguments:
        model: the `SpeakerModel` (its state_dict keys become `model.*`).
        cfg: the run's `TrainConfig`.
        labels: class names; `class_weights`: loss weights per class or None.
        waveform: batches hold waveforms (run `model.frontend` first).
        meta: extra `make_card` fields (mode, members, data fingerprint, speakers...).
        heldout: a DataLoader over speakers never trained on: each validation also logs
            `val_eer`, their verification EER over all pairs of items (cosine scores).
        teacher_dim: size of the teacher embeddings that batches carry (distillation): a
            linear map from the student's embedding to them is trained alongside and
            dropped afterwards (`voxid.training.distill`).
    """

    def __init__(
        self,
        model: SpeakerModel,
        cfg: TrainConfig,
        labels: list[str],
        *,
        class_weights: torch.Tensor | None = None,
        waveform: bool = False,
        meta: dict[str, Any] | None = None,
        heldout: Any = None,
        teacher_dim: int | None = None,
    ):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.labels = list(labels)
        self.waveform = waveform
        self.meta = dict(meta or {})
        # A plain attribute, not a buffer: checkpoints hold the model's weights only.
        self._class_weights = class_weights
        self.features = InputPipeline(model, cfg, waveform)
        self._val: list[tuple[torch.Tensor, ...]] = []
        self._heldout = heldout
        # The weights that train at all: freezing the encoder never thaws a fixed one.
        self._trainable = {id(p) for p in model.parameters() if p.requires_grad}
        self.distill: torch.nn.Linear | None = None
        if teacher_dim:
            self.distill = torch.nn.Linear(model.embedding_dim, teacher_dim, bias=False)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = None if self._class_weights is None else self._class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), y, weight=w)

    # -- Lightning hooks -------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One optimisation step; logs loss, accuracy and learning rate per batch."""
        x, lengths, y, *targets = batch
        feats, flen = self.features(x, lengths, train=True)
        encoded = self.model.encoder(feats, flen)
        logits = self.model.head(encoded, y)  # the margin applies during training only
        loss = self._loss(logits, y)
        if self.distill is not None and targets:
            mapped = self.distill(encoded.float())
            gap = 1 - F.cosine_similarity(mapped, targets[0].float(), dim=1).mean()
            self.log("train/distill", gap, on_step=True, on_epoch=False, batch_size=y.shape[0])
            loss = loss + self.cfg.distill_weight * gap
        acc = (logits.argmax(1) == y).float().mean()
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log_dict(
            {"train/loss": loss, "train/acc": acc, "train/lr": float(lr)},
            on_step=True, on_epoch=False, batch_size=y.shape[0], prog_bar=False,
        )  # fmt: skip
        self.log("loss", loss, on_step=True, prog_bar=True, logger=False, batch_size=y.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        """Start collecting this epoch's validation predictions."""
        self._val = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Scores without margin; under `mc_samples`, that many MC-dropout passes too."""
        x, lengths, y = batch
        feats, flen = self.features(x, lengths, train=False)
        logits = self.model(feats, None, flen)
        self.log("val_loss", self._loss(logits, y), on_epoch=True, sync_dist=True,
                 batch_size=y.shape[0], prog_bar=True)  # fmt: skip
        mc = []
        if self.cfg.mc_samples:
            self.model.set_mc_dropout(True)
            try:
                mc = [self.model(feats, None, flen).argmax(1) for _ in range(self.cfg.mc_samples)]
            finally:
                self.model.set_mc_dropout(False)
        mc_preds = torch.stack(mc, 1) if mc else y.new_zeros(y.shape[0], 0)
        self._val.append((logits.argmax(1), y, mc_preds))

    def on_validation_epoch_end(self) -> None:
        """Macro precision, recall and F1 over the whole (all-process) validation split."""
        if not self._val:
            return
        preds, ys, mc = (torch.cat(parts) for parts in zip(*self._val, strict=True))
        # all_gather returns a tensor for a tensor (its type also admits collections).
        preds, ys, mc = (cast(torch.Tensor, self.all_gather(t)) for t in (preds, ys, mc))
        if self.trainer.world_size > 1:
            preds, ys, mc = preds.flatten(0, 1), ys.flatten(0, 1), mc.flatten(0, 1)
        y = ys.cpu().numpy()
        values = summarize(y, preds.cpu().numpy())
        logged = {"val_acc": values["accuracy"],
                  "val_precision": values["precision"], "val_recall": values["recall"]}  # fmt: skip
        for key, value in mc_spread(y, mc.cpu().numpy()).items():
            logged[f"val_{key}"] = value
        # Every process holds the same gathered numbers; sync_dist only averages equal values.
        self.log_dict(logged, prog_bar=False, sync_dist=True)
        self.log("val_f1", values["f1"], prog_bar=True, sync_dist=True)
        self._val = []
        if self._heldout is not None:
            # Every process scores the whole (small) held-out set: equal values to sync.
            self.log("val_eer", self.heldout_eer(), prog_bar=True, sync_dist=True)

    @torch.no_grad()
    def heldout_eer(self) -> float:
        """Verification EER among the held-out speakers: every pair of their items."""
        was_training = self.model.training
        try:
            return heldout_eer(self.model, self._heldout, self.features, self.device)
        finally:
            self.model.train(was_training)

    def on_train_epoch_start(self) -> None:
        """Keep the encoder frozen for the first `freeze_encoder_epochs` (fine-tuning)."""
        if not self.cfg.freeze_encoder_epochs:
            return
        frozen = self.current_epoch < self.cfg.freeze_encoder_epochs
        for p in self._encoder_parameters():
            # A frozen weight gets no gradient, which AdamW skips; it stays in the optimizer
            # (configure_optimizers ran before this) and trains again once thawed.
            p.requires_grad_(not frozen)

    def _encoder_parameters(self) -> list[torch.nn.Parameter]:
        params = [*self.model.frontend.parameters(), *self.model.encoder.parameters()]
        return [p for p in params if id(p) in self._trainable]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW with cosine annealing of the learning rate over the epochs; the encoder's
        rate is scaled by `encoder_lr_scale` (fine-tuning)."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": params}]
        if self.cfg.encoder_lr_scale != 1.0:
            encoder = {id(p) for p in self._encoder_parameters()}
            groups = [
                {"params": [p for p in params if id(p) not in encoder]},
                {"params": [p for p in params if id(p) in encoder],
                 "lr": self.cfg.lr * self.cfg.encoder_lr_scale},
            ]  # fmt: skip
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make Lightning's checkpoint describe itself (the `voxid` dict, plain types)."""
        checkpoint["voxid"] = make_card(self.model, self.labels, **self.meta).to_dict()
