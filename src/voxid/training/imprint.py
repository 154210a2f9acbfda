"""Weight imprinting: a fine-tuned run's new cosine head started from its classes' mean
embeddings (Qi et al., 2018, "Low-shot learning with imprinted weights").

A random head is a classifier that fits nothing: the first epoch's gradients are large and
flow into the pretrained encoder, bending its embedding space towards arbitrary class
directions (Kumar et al., 2022, "Fine-tuning can distort pretrained features"). The
pretrained encoder's mean embedding of each class is already the cosine classifier that
nearest-centroid scoring uses, so training starts from a head that fits and moves the
encoder only where the new speakers need it. Runs from the same starting model then also
begin from the same head whatever their seed, which narrows their spread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from voxid.errors import ConfigError

__all__ = ["imprint_head"]


def imprint_head(
    model: Any,
    batches: Iterable[Any],
    features: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
) -> int:
    """Set each row of ``model.head.weight`` to the unit mean of its class's embeddings.

    Arguments:
        model: the `SpeakerModel` to fine-tune, its encoder already pretrained.
        batches: ``(x, lengths, labels, ...)`` batches of the training items.
        features: the run's input pipeline, called as ``features(x, lengths, train=False)``
            (no augmentation: the head should fit the clean voices).

    Returns the number of classes imprinted; a class without items keeps its random row.
    Raises `ConfigError` for a model without a cosine head.

    >>> from voxid.models import build_model
    >>> model = build_model("ecapa", n_classes=2, channels=16, mfa_channels=48,
    ...                     se_channels=8, attention_channels=8, embedding_dim=8)
    >>> _ = torch.manual_seed(0)
    >>> feats = torch.randn(4, 30, 80) + torch.tensor([2.0, 2.0, -2.0, -2.0])[:, None, None]
    >>> batch = (feats, None, torch.tensor([0, 0, 1, 1]))
    >>> imprint_head(model, [batch], lambda x, lengths, train: (x, lengths))
    2
    >>> model.eval().head.cosine(model.encoder(feats)).argmax(1).tolist()
    [0, 0, 1, 1]
    """
    weight = getattr(model.head, "weight", None)
    if not hasattr(model.head, "cosine") or not isinstance(weight, torch.Tensor):
        raise ConfigError(f"head_init: imprint needs a cosine head; {model.name} has none")
    sums = torch.zeros(weight.shape, dtype=torch.float64)
    was_training = model.training
    model.eval()  # BatchNorm's running statistics and dropout as at inference
    try:
        with torch.no_grad():
            for x, lengths, y, *_ in batches:
                feats, flen = features(x, lengths, train=False)
                encoded = F.normalize(model.encoder(feats, flen).double().cpu(), dim=1)
                sums.index_add_(0, y.cpu(), encoded)
    finally:
        model.train(was_training)
    filled = sums.norm(dim=1) > 0
    with torch.no_grad():
        weight[filled] = F.normalize(sums[filled], dim=1).to(weight.device, weight.dtype)
    return int(filled.sum())
