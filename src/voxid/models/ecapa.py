"""ECAPA-TDNN (Desplanques et al., 2020) on 80-dim fbank.

A 5-wide TDNN layer, three SE-Res2Net blocks (dilations 2, 3, 4; Res2Net scale 8; SE 128),
multi-layer feature aggregation (the three block outputs concatenated and mixed by a 1 x 1
TDNN to 1536 channels), attentive statistics pooling with global context, BatchNorm and a
linear layer to a 192-d embedding, trained with AAM-softmax (margin 0.2, scale 30).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from voxid.models.base import SpeakerModel, check_positive, encoder_defaults, feature_dim
from voxid.models.heads import AAMSoftmax
from voxid.models.layers import AttentiveStatsPool, SERes2NetBlock, TDNNBlock, length_mask


class ECAPAEncoder(nn.Module):
    """Features ``(B, T, n_feats)`` to an embedding ``(B, embedding_dim)``.

    Arguments
    ---------
    n_feats : feature bins of the input (80 fbank).
    channels : width of the TDNN and SE-Res2Net layers (512 in the paper's small model).
    mfa_channels : channels after multi-layer feature aggregation.
    dilations : dilation of each SE-Res2Net block.
    res2net_scale : Res2Net groups (must divide ``channels``).
    se_channels : SE bottleneck.
    attention_channels : bottleneck of the attentive pooling.
    embedding_dim : output size.

    >>> enc = ECAPAEncoder(80, channels=32, mfa_channels=96, se_channels=8,
    ...                    attention_channels=16, embedding_dim=24).eval()
    >>> enc(torch.randn(2, 50, 80)).shape
    torch.Size([2, 24])
    """

    def __init__(
        self,
        n_feats: int = 80,
        channels: int = 512,
        mfa_channels: int = 1536,
        dilations: tuple[int, ...] = (2, 3, 4),
        res2net_scale: int = 8,
        se_channels: int = 128,
        attention_channels: int = 128,
        embedding_dim: int = 192,
    ):
        super().__init__()
        self.layer1 = TDNNBlock(n_feats, channels, kernel_size=5, dilation=1)
        self.blocks = nn.ModuleList(
            SERes2NetBlock(channels, res2net_scale, se_channels, kernel_size=3, dilation=d)
            for d in dilations
        )
        self.mfa = TDNNBlock(channels * len(dilations), mfa_channels, kernel_size=1)
        self.pool = AttentiveStatsPool(mfa_channels, attention_channels, global_context=True)
        self.pool_norm = nn.BatchNorm1d(mfa_channels * 2)
        self.fc = nn.Linear(mfa_channels * 2, embedding_dim)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, n_feats)`` (+ valid frames ``(B,)``) -> ``(B, embedding_dim)``."""
        x = features.transpose(1, 2)
        mask = None if lengths is None else length_mask(lengths, x.shape[-1], x)
        x = self.layer1(x if mask is None else x * mask, mask)
        outputs = []
        for block in self.blocks:
            x = block(x, lengths)
            outputs.append(x)
        # Aggregating every block (not only the last) passes shallower, more local
        # speaker cues to the pooling.
        x = self.mfa(torch.cat(outputs, dim=1), mask)
        emb: torch.Tensor = self.fc(self.pool_norm(self.pool(x, lengths)))
        return emb


#: The encoder's defaults are the builder's (declared once, in ECAPAEncoder).
_DEFAULTS = encoder_defaults(ECAPAEncoder)


def build_ecapa(
    n_classes: int,
    feature_config: Any,
    *,
    channels: int = _DEFAULTS["channels"],
    mfa_channels: int = _DEFAULTS["mfa_channels"],
    dilations: tuple[int, ...] = _DEFAULTS["dilations"],
    res2net_scale: int = _DEFAULTS["res2net_scale"],
    se_channels: int = _DEFAULTS["se_channels"],
    attention_channels: int = _DEFAULTS["attention_channels"],
    embedding_dim: int = _DEFAULTS["embedding_dim"],
    margin: float = 0.2,
    scale: float = 30.0,
) -> SpeakerModel:
    """ECAPA-TDNN with its AAM-softmax head; ``channels`` shrinks it for tests and small data.

    >>> from voxid.models import build_model, count_parameters
    >>> round(count_parameters(build_model("ecapa", n_classes=10)) / 1e6, 1)
    6.2
    """
    dilations = tuple(int(d) for d in dilations)
    check_positive(
        channels=channels,
        mfa_channels=mfa_channels,
        se_channels=se_channels,
        attention_channels=attention_channels,
        embedding_dim=embedding_dim,
        n_blocks=len(dilations),
        **{f"dilations[{i}]": d for i, d in enumerate(dilations)},
    )
    encoder = ECAPAEncoder(
        feature_dim(feature_config),
        channels,
        mfa_channels,
        dilations,
        res2net_scale,
        se_channels,
        attention_channels,
        embedding_dim,
    )
    head = AAMSoftmax(embedding_dim, n_classes, margin=margin, scale=scale)
    return SpeakerModel("ecapa", encoder, head, feature_config, embedding_dim, n_classes)
