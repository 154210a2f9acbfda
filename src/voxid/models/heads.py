"""Training heads: embeddings ``(B, D)`` to class logits ``(B, N)``.

A head is kept apart from the encoder so that identification, verification and enrolment
all use the encoder alone; the head only shapes the embedding space during training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from voxid.errors import ConfigError


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace; Deng et al., 2019).

    Logits are ``s * cos(theta_j)`` between the L2-normalised embedding and class weights;
    when labels are given, the target class gets ``s * cos(theta_y + m)`` instead. Where
    ``theta_y + m`` would pass pi (``cos(theta_y) <= cos(pi - m)``) the curve is continued
    as ``cos(theta_y) - sin(pi - m) * m`` so the logit keeps falling with the angle.

    Arguments
    ---------
    embedding_dim : embedding size ``D``.
    n_classes : number of speakers ``N`` (0: no classes, an encoder shipped without its
        training speakers).
    margin : additive angle ``m`` in radians.
    scale : logit scale ``s``.
    easy_margin : apply the margin only where ``cos(theta_y) > 0``.

    >>> head = AAMSoftmax(16, 5, margin=0.2, scale=30.0)
    >>> head(torch.randn(3, 16), torch.tensor([0, 4, 2])).shape
    torch.Size([3, 5])
    """

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        margin: float = 0.2,
        scale: float = 30.0,
        easy_margin: bool = False,
    ):
        super().__init__()
        if n_classes < 0:
            raise ConfigError(f"n_classes={n_classes}: must be at least 0")
        if not 0.0 <= margin < math.pi / 2:
            raise ConfigError(f"margin={margin}: must be in [0, pi/2) radians")
        if scale <= 0:
            raise ConfigError(f"scale={scale}: must be positive")
        self.margin, self.scale, self.easy_margin = float(margin), float(scale), easy_margin
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        if n_classes:
            nn.init.xavier_uniform_(self.weight)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity ``(B, N)`` of each embedding with each class weight."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, N)``; the margin is applied to the target class only with ``labels``."""
        cosine = self.cosine(embeddings)
        if labels is None:
            return self.scale * cosine
        # Clamp before sqrt: rounding can push |cos| a hair past 1 and make the gradient NaN.
        sine = (1.0 - cosine.pow(2)).clamp(1e-7, 1.0).sqrt()
        phi = cosine * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        target = F.one_hot(labels.long(), cosine.shape[1]).bool()
        return self.scale * torch.where(target, phi, cosine)


class LinearHead(nn.Module):
    """A plain linear classifier; ``labels`` are accepted and ignored for a uniform call.

    >>> LinearHead(64, 10)(torch.randn(2, 64)).shape
    torch.Size([2, 10])
    """

    def __init__(self, embedding_dim: int, n_classes: int):
        super().__init__()
        if n_classes < 0:
            raise ConfigError(f"n_classes={n_classes}: must be at least 0")
        self.fc = nn.Linear(embedding_dim, n_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, N)``."""
        logits: torch.Tensor = self.fc(embeddings)
        return logits
