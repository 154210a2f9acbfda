"""After training: score the best weights on validation and test, pick the threshold.

Plain torch, run once on the main process: the authentication threshold comes from the
validation outsiders' member scores at the target FAR, and the test split (when present)
gives the headline numbers that go into `metrics.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxid.augment import pseudo_voices
from voxid.config import TrainConfig
from voxid.training.batch import InputPipeline
from voxid.training.data import TaskData


@dataclass
class RunResult:
    """Where a run put its files, and its numbers (also in `metrics.json`)."""

    out_dir: Path
    model_path: Path
    best_ckpt: Path | None = None
    last_ckpt: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        """The resolved recipe of the run."""
        return self.out_dir / "config.yaml"

    @property
    def threshold(self) -> float | None:
        """The authentication threshold chosen on validation data (None to identify)."""
        return self.metrics.get("threshold")


@dataclass
class Predictions:
    """Scores of one split: `probs (N, C)`, class labels `y` (-1: a speaker who is no class),
    per-item speaker names, the mean cross-entropy `loss` (over items with a class), and
    MC-dropout predictions `mc (N, S)` (S may be 0). Authentication runs also give
    `member_score (N,)` and `member (N,)`, True for the members' items. `people (C,)` is
    False for a class that is a speaker-augmentation pseudo-voice (None: every class is
    a person); `mc` already ranks people only."""

    probs: np.ndarray
    y: np.ndarray
    speakers: list[str]
    loss: float
    mc: np.ndarray
    member_score: np.ndarray | None = None
    member: np.ndarray | None = None
    people: np.ndarray | None = None

    @property
    def known(self) -> np.ndarray:
        """Items whose speaker is one of the run's classes."""
        return self.y >= 0

    def closed_set(self) -> tuple[np.ndarray, np.ndarray]:
        """`(keep, predicted)`: which items have a person's class, and each kept item's
        predicted class, ranked among people only.

        A pseudo-voice (`<speaker>@speed_0.9`) shapes the embedding space in training, but
        nobody is one: as in `voxid evaluate`, its items and its score column are left out.
        """
        keep = self.known.copy()
        probs = self.probs
        if self.people is not None and not self.people.all():
            keep &= self.people[np.maximum(self.y, 0)]
            probs = np.where(self.people[None, :], probs, -np.inf)
        return keep, probs[keep].argmax(1)

    def member_view(self) -> tuple[np.ndarray, np.ndarray]:
        """`(member_score, member)` of an authentication run (ValueError otherwise)."""
        if self.member_score is None or self.member is None:
            raise ValueError("predictions of an identification run have no member scores")
        return self.member_score, self.member


@torch.no_grad()
def predict(model: Any, task: TaskData, split: str, cfg: TrainConfig, device: str) -> Predictions:
    """Softmax scores (no margin) of `model` on every item of `split` (`val` or `test`),
    and each item's member score in an authentication run."""
    data = task.val if split == "val" else task.test
    if data is None:
        raise ValueError(f"predict: the run has no {split!r} split")
    inputs = InputPipeline(model, cfg, task.waveform)
    model.to(device).eval()
    loader = task.loader(split, cfg)
    by_speaker = cfg.mode == "authenticate" and cfg.auth_scoring == "speakers"
    member_rows = [i for i, name in enumerate(task.labels) if name in set(cfg.members)]
    people = ~pseudo_voices(task.labels) if cfg.mode == "identify" else None
    # no mask at all where every class is a person (most runs)
    pseudo_cols = None if people is None or people.all() else torch.from_numpy(~people).to(device)
    probs, mc, losses, member_scores = [], [], [], []
    for x, lengths, y in loader:
        x, lengths, y = x.to(device), lengths.to(device), y.to(device)
        feats, flen = inputs(x, lengths, train=False)
        embeddings = model.encoder(feats, flen)
        logits = model.head(embeddings).float()
        losses.append(F.cross_entropy(logits, y, reduction="sum", ignore_index=-1).item())
        probs.append(logits.softmax(1).cpu())
        if by_speaker:
            cosine = model.head.cosine(embeddings).float()
            member_scores.append(cosine[:, member_rows].amax(1).cpu())
        if cfg.mc_samples:
            model.set_mc_dropout(True)
            try:
                passes = [
                    _people_only(model(feats, None, flen), pseudo_cols).argmax(1).cpu()
                    for _ in range(cfg.mc_samples)
                ]
            finally:
                model.set_mc_dropout(False)
            mc.append(torch.stack(passes, 1))
    n = len(data)
    mc_arr = torch.cat(mc).numpy() if mc else np.zeros((n, 0), dtype=np.int64)
    probs_arr = torch.cat(probs).numpy()
    pred = Predictions(probs_arr, data.labels.copy(), data.speakers,
                       sum(losses) / max(int((data.labels >= 0).sum()), 1), mc_arr,
                       people=people)  # fmt: skip
    if cfg.mode == "authenticate":
        pred.member = np.array([s in set(cfg.members) for s in data.speakers])
        pred.member_score = torch.cat(member_scores).numpy() if by_speaker else probs_arr[:, 1]
    return pred


def _people_only(logits: torch.Tensor, pseudo: torch.Tensor | None) -> torch.Tensor:
    return logits if pseudo is None else logits.masked_fill(pseudo, float("-inf"))


def classification_metrics(pred: Predictions) -> dict[str, Any]:
    """Loss, top-1 accuracy and macro P/R/F1 (with MC-dropout mean and spread when sampled),
    over the items whose speaker is a class and a person (`Predictions.closed_set`)."""
    known, predicted = pred.closed_set()
    if not known.any():
        return {"n": 0}
    y = pred.y[known]
    values = summarize(y, predicted)
    out = {"n": int(known.sum()), "loss": float(pred.loss), "top1": values["accuracy"],
           "precision": values["precision"], "recall": values["recall"],
           "macro_f1": values["f1"]}  # fmt: skip
    out.update(mc_spread(y, pred.mc[known]))
    return out


def choose_threshold(val: Predictions, target_far: float) -> float:
    """The member-score threshold whose FAR on validation outsiders is at most `target_far`."""
    from voxid.metrics import threshold_at_far

    score, member = val.member_view()
    return float(threshold_at_far(score[~member], target_far))


def authentication_metrics(
    pred: Predictions, threshold: float, train_speakers: list[str]
) -> dict[str, Any]:
    """FAR (all, seen and never-seen outsiders), FRR and accuracy at `threshold`."""
    from voxid.metrics import eer, far_frr

    score, member = pred.member_view()
    seen = np.array([s in set(train_speakers) for s in pred.speakers])
    tar, non = score[member], score[~member]
    out: dict[str, Any] = {
        "threshold": threshold,
        "accuracy": float(np.mean((score >= threshold) == member)),
        "n_members": int(member.sum()),
    }
    if tar.size and non.size:
        far, frr = far_frr(tar, non, threshold)
        out.update(far=far, frr=frr, eer=float(eer(tar, non)[0]))
    for name, pick in (("seen", seen), ("unseen", ~seen)):
        outsiders = score[~member & pick]
        out[f"far_{name}"] = float(np.mean(outsiders >= threshold)) if outsiders.size else None
        out[f"n_outsiders_{name}"] = int(outsiders.size)
    return out


def summarize(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision, recall and F1 over the classes present in `y` or `pred`.

    Not over all the model's classes: a validation split of a corpus with many speakers holds
    some of them only, and the absent ones (nothing to recall, nothing predicted) would
    count as zeros, putting a macro recall near 0.1 beside an accuracy near 0.8, the
    inconsistency of the CNN paper's tables. `voxid evaluate` averages the same way.

    >>> summarize(np.array([0, 7]), np.array([0, 7]))["recall"]
    1.0
    """
    from voxid.metrics import classification_report

    report = classification_report(y, pred)
    return {"accuracy": report["accuracy"], **report["macro"]}


def mc_spread(y: np.ndarray, mc: np.ndarray) -> dict[str, float]:
    """Mean and standard deviation of macro P/R/F1 over MC-dropout passes `mc (N, S)`.

    These are the error bars of the CNN-RNN report; empty when no passes were sampled.
    """
    if mc.ndim != 2 or mc.shape[1] == 0:
        return {}
    runs = [summarize(y, mc[:, s]) for s in range(mc.shape[1])]
    out = {}
    for key in ("precision", "recall", "f1"):
        vals = np.array([r[key] for r in runs])
        out[f"mc_{key}_mean"] = float(vals.mean())
        out[f"mc_{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return out


@torch.no_grad()
def heldout_eer(model: Any, loader: Any, inputs: Any, device: Any) -> float:
    """`pairwise_eer` of `model`'s embeddings of every item in `loader` (eval mode)."""
    model.eval()
    embeddings, speakers = [], []
    for x, lengths, y in loader:
        feats, flen = inputs(x.to(device), lengths.to(device), train=False)
        embeddings.append(model.embed(feats, flen).float().cpu())
        speakers.append(y)
    return pairwise_eer(torch.cat(embeddings), torch.cat(speakers))


def pairwise_eer(embeddings: torch.Tensor, speakers: torch.Tensor) -> float:
    """EER of cosine scores over every pair of distinct items (same speaker: target).

    >>> e = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> pairwise_eer(e, torch.tensor([0, 0, 1, 1]))
    0.0
    """
    from voxid.metrics import eer

    e = torch.nn.functional.normalize(embeddings.float(), dim=1)
    scores = e @ e.T
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    same = speakers[i] == speakers[j]
    pair_scores = scores[i, j]
    if not same.any() or same.all():
        return 1.0
    return float(eer(pair_scores[same].numpy(), pair_scores[~same].numpy())[0])
