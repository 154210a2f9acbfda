"""The CNN-RNN speaker encoder: SE-CNN front, bidirectional GRU, attentive statistics pooling.

Log-mel ``(B, T, 64)`` is treated as a one-channel image ``(B, 1, T, 64)``. Three blocks
(3 x 3 convolution with 32, 64, 128 filters, BatchNorm, ReLU, squeeze-and-excitation,
max-pooling over frequency only) keep every frame and give ``(B, T, 128 * 8 = 1024)``. A
2-layer bidirectional GRU (256 units each way) models time; attentive statistics pooling
(128-d tanh bottleneck) gives a weighted mean and standard deviation (1024); an MLP
(Linear, BatchNorm, ReLU, Linear) projects to a 256-d L2-normalised embedding. Dropout 0.3
after the CNN and after pooling doubles as Monte-Carlo dropout for uncertainty; the
AAM-softmax head (margin 0.25, scale 30) is used in training only.

`mean_norm=True` (not in the paper) subtracts each mel band's mean over the utterance
before the CNN, as ECAPA's fbank front-end does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from voxid.errors import ConfigError
from voxid.models.base import (
    SpeakerModel,
    check_positive,
    check_probability,
    encoder_defaults,
    feature_dim,
)
from voxid.models.heads import AAMSoftmax
from voxid.models.layers import AttentiveStatsPool, SEBlock, length_mask


class ConvSEBlock(nn.Module):
    """Conv 3 x 3 (padding 1), BatchNorm, ReLU, SE, MaxPool(1, 2) over frequency only.

    >>> ConvSEBlock(1, 32)(torch.randn(2, 1, 20, 64)).shape
    torch.Size([2, 32, 20, 32])
    """

    def __init__(self, in_channels: int, out_channels: int, se_reduction: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.se = SEBlock(out_channels, max(out_channels // se_reduction, 1))
        self.pool = nn.MaxPool2d(kernel_size=(1, 2))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C_in, T, F) -> (B, C_out, T, F // 2)``; padded frames are zeroed."""
        x = self.se(F.relu(self.norm(self.conv(x))), lengths)
        if lengths is not None:
            # Zeroed padding lets the next 3 x 3 convolution see what it would see on the
            # unpadded item.
            x = x * length_mask(lengths, x.shape[2], x).unsqueeze(-1)
        pooled: torch.Tensor = self.pool(x)
        return pooled


class CRNNEncoder(nn.Module):
    """Log-mel ``(B, T, n_mels)`` to an L2-normalised embedding ``(B, embedding_dim)``.

    Arguments
    ---------
    n_mels : mel bands of the input.
    conv_channels : filters of the three conv blocks.
    gru_hidden : GRU units per direction.
    gru_layers : stacked bidirectional GRU layers.
    gru_dropout : dropout between GRU layers.
    attention_channels : bottleneck of the attentive pooling.
    mlp_hidden : hidden width of the projection MLP.
    embedding_dim : output size.
    dropout : (MC) dropout after the CNN and after pooling.
    mean_norm : subtract each band's mean over the valid frames first.

    >>> enc = CRNNEncoder(n_mels=64, conv_channels=(4, 8, 8), gru_hidden=16,
    ...                   attention_channels=8, mlp_hidden=32, embedding_dim=16).eval()
    >>> emb = enc(torch.randn(3, 40, 64), lengths=torch.tensor([40, 30, 12]))
    >>> emb.shape, bool(torch.allclose(emb.norm(dim=1), torch.ones(3)))
    (torch.Size([3, 16]), True)
    """

    def __init__(
        self,
        n_mels: int = 64,
        conv_channels: tuple[int, ...] = (32, 64, 128),
        gru_hidden: int = 256,
        gru_layers: int = 2,
        gru_dropout: float = 0.2,
        attention_channels: int = 128,
        mlp_hidden: int = 512,
        embedding_dim: int = 256,
        dropout: float = 0.3,
        mean_norm: bool = False,
    ):
        super().__init__()
        self.mean_norm = bool(mean_norm)
        blocks, in_ch, freq = [], 1, n_mels
        for out_ch in conv_channels:
            blocks.append(ConvSEBlock(in_ch, out_ch))
            in_ch, freq = out_ch, freq // 2
        if freq < 1:
            raise ConfigError(
                f"n_mels={n_mels}: too few mel bands for {len(conv_channels)} frequency poolings"
            )
        self.cnn = nn.ModuleList(blocks)
        self.cnn_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(
            in_ch * freq,
            gru_hidden,
            num_layers=gru_layers,
            batch_first=True,
            bidirectional=True,
            dropout=gru_dropout if gru_layers > 1 else 0.0,
        )
        self.pool = AttentiveStatsPool(2 * gru_hidden, attention_channels)
        self.pool_dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(4 * gru_hidden, mlp_hidden),
            nn.BatchNorm1d(mlp_hidden),
            nn.ReLU(),
            nn.Linear(mlp_hidden, embedding_dim),
        )

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, n_mels)`` (+ valid frames ``(B,)``) -> ``(B, embedding_dim)``."""
        if self.mean_norm:
            # A fixed channel (microphone, room colouring) is an offset per band in the log
            # domain: removing the band means keeps the model from learning the session.
            mask = length_mask(lengths, features.shape[1], features).transpose(1, 2)
            mean = (features * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
            features = (features - mean) * mask
        x = features.unsqueeze(1)
        if lengths is not None:
            x = x * length_mask(lengths, x.shape[2], x).unsqueeze(-1)
        for block in self.cnn:
            x = block(x, lengths)  # (B, C, T, F'): time is never pooled
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, T, C * F')
        x = self.cnn_dropout(x)
        if (
            lengths is not None
            and not torch.jit.is_tracing()  # type: ignore[no-untyped-call]
            and not torch.onnx.is_in_onnx_export()
            # Packed GRUs take a slow per-step path on the CPU: pack only real padding.
            and bool((lengths < x.shape[1]).any())
        ):
            # Packing stops the backward GRU direction from starting in the padding.
            packed = pack_padded_sequence(
                x, lengths.cpu().clamp(1, x.shape[1]), batch_first=True, enforce_sorted=False
            )
            x, _ = pad_packed_sequence(
                self.gru(packed)[0], batch_first=True, total_length=x.shape[1]
            )
        elif torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing():  # type: ignore[no-untyped-call]
            x = _onnx_gru(self.gru, x)
        else:
            x = self.gru(x)[0]
        pooled = self.pool_dropout(self.pool(x.transpose(1, 2), lengths))
        return F.normalize(self.mlp(pooled), dim=1)


def _onnx_gru(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The bidirectional GRU as ONNX ``GRU`` nodes, for the dynamo exporter.

    torch.export unrolls ``nn.GRU`` over time, which fixes the time axis; the ONNX op keeps
    it dynamic. (The TorchScript exporter maps ``nn.GRU`` to the same op by itself.)
    """

    def gates(w: torch.Tensor) -> torch.Tensor:
        r, z, n = w.chunk(3, dim=0)  # torch orders the gates r, z, n; ONNX z, r, h
        return torch.cat([z, r, n], dim=0)

    x = x.transpose(0, 1)  # (T, B, I)
    hidden = gru.hidden_size
    for layer in range(gru.num_layers):
        names = [f"_l{layer}", f"_l{layer}_reverse"]
        w = torch.stack([gates(getattr(gru, "weight_ih" + n)) for n in names])
        r = torch.stack([gates(getattr(gru, "weight_hh" + n)) for n in names])
        b = torch.stack(
            [torch.cat([gates(getattr(gru, b + n)) for b in ("bias_ih", "bias_hh")]) for n in names]
        )
        y = torch.onnx.ops.symbolic(
            "::GRU",
            (x, w, r, b),
            {"hidden_size": hidden, "direction": "bidirectional", "linear_before_reset": 1},
            dtype=x.dtype,
            shape=(x.shape[0], 2, x.shape[1], hidden),
            version=14,
        )  # (T, 2, B, H); linear_before_reset=1 is PyTorch's GRU formula
        x = y.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], 2 * hidden)
    return x.transpose(0, 1)


#: The encoder's defaults are the builder's (declared once, in CRNNEncoder).
_DEFAULTS = encoder_defaults(CRNNEncoder)


def build_crnn(
    n_classes: int,
    feature_config: Any,
    *,
    conv_channels: tuple[int, ...] = _DEFAULTS["conv_channels"],
    gru_hidden: int = _DEFAULTS["gru_hidden"],
    gru_layers: int = _DEFAULTS["gru_layers"],
    gru_dropout: float = _DEFAULTS["gru_dropout"],
    attention_channels: int = _DEFAULTS["attention_channels"],
    mlp_hidden: int = _DEFAULTS["mlp_hidden"],
    embedding_dim: int = _DEFAULTS["embedding_dim"],
    dropout: float = _DEFAULTS["dropout"],
    mean_norm: bool = _DEFAULTS["mean_norm"],
    margin: float = 0.25,
    scale: float = 30.0,
) -> SpeakerModel:
    """The CNN-RNN model with its AAM-softmax head.

    >>> from voxid.models import build_model
    >>> model = build_model("crnn", n_classes=3, conv_channels=(4, 8, 8), gru_hidden=16,
    ...                     attention_channels=8, mlp_hidden=32, embedding_dim=16)
    >>> model(torch.randn(2, 30, 64), labels=torch.tensor([0, 2])).shape
    torch.Size([2, 3])
    """
    conv_channels = tuple(int(c) for c in conv_channels)
    check_positive(
        gru_hidden=gru_hidden,
        gru_layers=gru_layers,
        attention_channels=attention_channels,
        mlp_hidden=mlp_hidden,
        embedding_dim=embedding_dim,
        n_conv_blocks=len(conv_channels),
        **{f"conv_channels[{i}]": c for i, c in enumerate(conv_channels)},
    )
    check_probability(gru_dropout=gru_dropout, dropout=dropout)
    encoder = CRNNEncoder(
        feature_dim(feature_config),
        conv_channels,
        gru_hidden,
        gru_layers,
        gru_dropout,
        attention_channels,
        mlp_hidden,
        embedding_dim,
        dropout,
        mean_norm,
    )
    head = AAMSoftmax(embedding_dim, n_classes, margin=margin, scale=scale)
    return SpeakerModel("crnn", encoder, head, feature_config, embedding_dim, n_classes)
