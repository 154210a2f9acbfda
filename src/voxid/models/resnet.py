"""Thin ResNet34 speaker encoder (the WeSpeaker / VoxCeleb baseline shape).

Fbank ``(B, T, 80)`` is a one-channel image; four stages of basic residual blocks
(3, 4, 6, 3 blocks; 32, 64, 128, 256 channels; stride 2 from the second stage, over time
and frequency) give ``(B, 256, T/8, 10)``; statistics pooling over time of the
channel-frequency map and one linear layer give a 256-d embedding (about 6.6 M parameters),
trained with AAM-softmax (margin 0.2, scale 30).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxid.models.base import SpeakerModel, check_positive, encoder_defaults, feature_dim
from voxid.models.heads import AAMSoftmax
from voxid.models.layers import StatsPool, scale_lengths


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with BatchNorm and a (projected) shortcut.

    >>> BasicBlock(8, 16, stride=2)(torch.randn(2, 8, 20, 40)).shape
    torch.Size([2, 16, 10, 20])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, F) -> (B, C_out, T / stride, F / stride)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """Features ``(B, T, n_feats)`` to an embedding ``(B, embedding_dim)``.

    Arguments
    ---------
    n_feats : feature bins of the input.
    base_channels : channels of the first stage (doubled at each later stage).
    blocks : residual blocks per stage (3, 4, 6, 3 is ResNet34).
    embedding_dim : output size.

    ``lengths`` mask the pooling; unlike the 1-D models, the strided convolutions still see
    some padding near each item's end, so a padded item's embedding is close to, not equal
    to, its embedding alone.

    >>> enc = ResNetEncoder(80, base_channels=4, blocks=(1, 1, 1, 1), embedding_dim=16).eval()
    >>> enc(torch.randn(2, 40, 80)).shape
    torch.Size([2, 16])
    """

    def __init__(
        self,
        n_feats: int = 80,
        base_channels: int = 32,
        blocks: tuple[int, ...] = (3, 4, 6, 3),
        embedding_dim: int = 256,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, base_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(),
        )
        stages, in_ch, freq = [], base_channels, n_feats
        for i, n_blocks in enumerate(blocks):
            out_ch, stride = base_channels * 2**i, 1 if i == 0 else 2
            layers = [BasicBlock(in_ch, out_ch, stride)]
            layers += [BasicBlock(out_ch, out_ch) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch, freq = out_ch, (freq - 1) // stride + 1
        self.stages = nn.Sequential(*stages)
        self.time_stride = 2 ** (len(blocks) - 1)
        self.pool = StatsPool()
        self.fc = nn.Linear(2 * in_ch * freq, embedding_dim)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, n_feats)`` (+ valid frames ``(B,)``) -> ``(B, embedding_dim)``."""
        x = self.stages(self.stem(features.unsqueeze(1)))  # (B, C, T', F')
        x = x.permute(0, 1, 3, 2).flatten(1, 2)  # (B, C * F', T')
        emb: torch.Tensor = self.fc(self.pool(x, scale_lengths(lengths, self.time_stride)))
        return emb


#: The encoder's defaults are the builder's (declared once, in ResNetEncoder).
_DEFAULTS = encoder_defaults(ResNetEncoder)


def build_resnet34(
    n_classes: int,
    feature_config: Any,
    *,
    base_channels: int = _DEFAULTS["base_channels"],
    blocks: tuple[int, ...] = _DEFAULTS["blocks"],
    embedding_dim: int = _DEFAULTS["embedding_dim"],
    margin: float = 0.2,
    scale: float = 30.0,
) -> SpeakerModel:
    """Thin ResNet34 with its AAM-softmax head.

    >>> from voxid.models import build_model
    >>> model = build_model("resnet34", n_classes=3, base_channels=4, blocks=(1, 1, 1, 1))
    >>> model.eval().embed(torch.randn(2, 40, 80)).shape
    torch.Size([2, 256])
    """
    blocks = tuple(int(b) for b in blocks)
    check_positive(
        base_channels=base_channels,
        embedding_dim=embedding_dim,
        n_stages=len(blocks),
        **{f"blocks[{i}]": b for i, b in enumerate(blocks)},
    )
    encoder = ResNetEncoder(feature_dim(feature_config), base_channels, blocks, embedding_dim)
    head = AAMSoftmax(embedding_dim, n_classes, margin=margin, scale=scale)
    return SpeakerModel("resnet34", encoder, head, feature_config, embedding_dim, n_classes)
