"""Building blocks shared by the speaker encoders: masks, squeeze-and-excitation, TDNN and
Res2Net blocks, and the statistics poolings that turn frames into one vector.

Tensors inside encoders are channels-first, ``(B, C, T)`` for 1-D and ``(B, C, T, F)`` for
2-D blocks. Optional ``lengths`` are valid frame counts ``(B,)``; padded frames are kept out
of every statistic so a padded batch embeds each item as it would alone.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from voxid.errors import ConfigError


def length_mask(lengths: torch.Tensor | None, max_len: int, like: torch.Tensor) -> torch.Tensor:
    """Float mask ``(B, 1, T)``: 1 for valid frames, 0 for padding (all ones without lengths).

    Arguments
    ---------
    lengths : valid frame counts ``(B,)`` or None.
    max_len : the padded length ``T``.
    like : a tensor whose batch size, dtype and device the mask takes.

    >>> length_mask(torch.tensor([2, 3]), 3, torch.zeros(2, 4, 3)).squeeze(1)
    tensor([[1., 1., 0.],
            [1., 1., 1.]])
    """
    if lengths is None:
        return torch.ones(like.shape[0], 1, max_len, dtype=like.dtype, device=like.device)
    steps = torch.arange(max_len, device=like.device)
    return (steps[None, :] < lengths.to(like.device)[:, None]).to(like.dtype).unsqueeze(1)


def scale_lengths(lengths: torch.Tensor | None, factor: int) -> torch.Tensor | None:
    """Frame counts after a time stride of ``factor`` (ceil, as a padded strided conv gives).

    >>> scale_lengths(torch.tensor([9, 16]), 8)
    tensor([2, 2])
    """
    if lengths is None:
        return None
    return torch.div(lengths + factor - 1, factor, rounding_mode="floor")


def masked_mean_std(
    x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and standard deviation over the last axis.

    Arguments
    ---------
    x : ``(B, C, T)``.
    mask : weights ``(B, 1 or C, T)`` summing to anything positive per row.

    >>> mean, std = masked_mean_std(torch.randn(2, 5, 7), torch.ones(2, 1, 7))
    >>> mean.shape, std.shape
    (torch.Size([2, 5]), torch.Size([2, 5]))
    """
    weights = mask / mask.sum(dim=-1, keepdim=True).clamp_min(eps)
    mean = (x * weights).sum(dim=-1)
    var = ((x - mean.unsqueeze(-1)).pow(2) * weights).sum(dim=-1)
    # The floor keeps the sqrt gradient finite on constant (e.g. silent) inputs.
    return mean, var.clamp_min(eps).sqrt()


class StatsPool(nn.Module):
    """Statistics pooling: mean and standard deviation over time, ``(B, C, T) -> (B, 2C)``.

    >>> StatsPool()(torch.randn(2, 16, 50)).shape
    torch.Size([2, 32])
    """

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Pool ``x`` ``(B, C, T)``, ignoring frames at or beyond ``lengths``."""
        mean, std = masked_mean_std(x, length_mask(lengths, x.shape[-1], x))
        return torch.cat([mean, std], dim=1)


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling (Okabe et al., 2018): a tanh bottleneck scores each frame
    (per channel), and the softmax weights give a weighted mean and standard deviation.

    With ``global_context`` (ECAPA-TDNN) the attention also sees the utterance's mean and
    standard deviation appended to every frame.

    Arguments
    ---------
    channels : input channels ``C``; the output has ``2C``.
    bottleneck : width of the attention's hidden layer.
    global_context : append utterance statistics to the attention input.

    >>> AttentiveStatsPool(32, bottleneck=8)(torch.randn(2, 32, 40)).shape
    torch.Size([2, 64])
    """

    def __init__(self, channels: int, bottleneck: int = 128, global_context: bool = False):
        super().__init__()
        _positive(channels=channels, bottleneck=bottleneck)
        self.global_context = global_context
        self.channels = channels
        in_channels = channels * 3 if global_context else channels
        self.attention = nn.Sequential(
            nn.Conv1d(in_channels, bottleneck, kernel_size=1),
            nn.Tanh(),
            nn.Conv1d(bottleneck, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Pool ``x`` ``(B, C, T)`` to ``(B, 2C)``, ignoring frames at or beyond ``lengths``."""
        mask = length_mask(lengths, x.shape[-1], x)
        if self.global_context:
            scores = self.attention[2](self.attention[1](self._context_hidden(x, mask)))
        else:
            scores = self.attention(x)
        # A large negative (not -inf) keeps fully padded rows finite in ONNX and fp16.
        scores = scores.masked_fill(mask == 0, -1e4)
        weights = torch.softmax(scores, dim=-1)
        mean, std = masked_mean_std(x, weights)
        return torch.cat([mean, std], dim=1)

    def _context_hidden(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The first attention layer on ``[x; mean; std]``, with the statistics projected once.

        Appending the utterance statistics to every frame and convolving the ``3C`` channels
        is what the paper describes; but the statistics are the same at every frame, so
        their share of the 1 x 1 convolution is one matrix-vector product per utterance.
        That is the same result (and the same weights) for a third of the layer's work,
        about 7 % of the whole ECAPA-TDNN's.
        """
        # A Python int, not x.shape[1]: the weight slices stay constants in an ONNX export,
        # so the exported Conv keeps an initializer as its weight (int8 quantisation needs it).
        conv, c = cast(nn.Conv1d, self.attention[0]), self.channels
        mean, std = masked_mean_std(x, mask)
        weight = conv.weight.squeeze(-1)
        context = weight[:, c : 2 * c] @ mean.unsqueeze(-1) + weight[:, 2 * c :] @ std.unsqueeze(-1)
        return F.conv1d(x, conv.weight[:, :c], conv.bias) + context


class SEBlock(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): channel gates from the global average.

    Works on ``(B, C, T)`` and ``(B, C, T, F)``; with ``lengths`` the average skips
    padded frames (time is axis 2).

    Arguments
    ---------
    channels : input channels.
    bottleneck : hidden width of the gate (ECAPA uses 128; CNNs use ``channels // 8``).

    >>> SEBlock(16, 4)(torch.randn(2, 16, 10, 8)).shape
    torch.Size([2, 16, 10, 8])
    """

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        _positive(channels=channels, bottleneck=bottleneck)
        self.fc1 = nn.Linear(channels, bottleneck)
        self.fc2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Rescale the channels of ``x``."""
        dims = tuple(range(2, x.dim()))
        if lengths is None:
            squeezed = x.mean(dim=dims)
        else:
            mask = length_mask(lengths, x.shape[2], x)  # time is axis 2 in 1-D and 2-D
            mask = mask.unsqueeze(-1) if x.dim() == 4 else mask
            count = mask.sum(dim=dims) * (x.shape[3] if x.dim() == 4 else 1)
            squeezed = (x * mask).sum(dim=dims) / count.clamp_min(1.0)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))
        return x * gate.view(*gate.shape, *([1] * (x.dim() - 2)))


class TDNNBlock(nn.Module):
    """Dilated 1-D convolution, ReLU, BatchNorm (the ECAPA-TDNN ordering).

    >>> TDNNBlock(80, 32, kernel_size=5, dilation=1)(torch.randn(2, 80, 30)).shape
    torch.Size([2, 32, 30])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        _positive(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size)
        # Same padding keeps T unchanged so lengths need no rescaling.
        pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=pad
        )
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C_in, T) -> (B, C_out, T)``; padded frames (``mask`` 0) are zeroed."""
        out = self.norm(F.relu(self.conv(x)))
        # Zeroed padding makes the next convolution see exactly the zero padding it would
        # see on the unpadded item, so a padded batch embeds each item as it would alone.
        result: torch.Tensor = out if mask is None else out * mask
        return result


class Res2NetBlock(nn.Module):
    """Res2Net multi-scale convolution: the channels are split into ``scale`` groups, each
    group after the first is convolved with the previous group's output added in, giving a
    range of receptive fields inside one block.

    >>> Res2NetBlock(32, scale=4, kernel_size=3, dilation=2)(torch.randn(2, 32, 20)).shape
    torch.Size([2, 32, 20])
    """

    def __init__(self, channels: int, scale: int = 8, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        if scale < 2 or channels % scale:
            raise ConfigError(f"res2net_scale={scale}: must be >= 2 and divide channels={channels}")
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(
            TDNNBlock(width, width, kernel_size, dilation) for _ in range(scale - 1)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, T) -> (B, C, T)``."""
        parts = torch.chunk(x, self.scale, dim=1)
        outputs = [parts[0]]
        previous = None
        for i, block in enumerate(self.blocks, start=1):
            previous = block(parts[i] if previous is None else parts[i] + previous, mask)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SERes2NetBlock(nn.Module):
    """ECAPA-TDNN block: 1x1 TDNN, Res2Net, 1x1 TDNN, SE, with a residual connection.

    >>> SERes2NetBlock(32, scale=4, se_channels=8, dilation=3)(torch.randn(2, 32, 20)).shape
    torch.Size([2, 32, 20])
    """

    def __init__(
        self,
        channels: int,
        scale: int = 8,
        se_channels: int = 128,
        kernel_size: int = 3,
        dilation: int = 1,
    ):
        super().__init__()
        self.tdnn1 = TDNNBlock(channels, channels, kernel_size=1)
        self.res2net = Res2NetBlock(channels, scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(channels, channels, kernel_size=1)
        self.se = SEBlock(channels, se_channels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, T) -> (B, C, T)``."""
        mask = None if lengths is None else length_mask(lengths, x.shape[-1], x)
        out = self.tdnn2(self.res2net(self.tdnn1(x, mask), mask), mask)
        out = self.se(out, lengths) + x
        result: torch.Tensor = out if mask is None else out * mask
        return result


def _positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r}: must be a positive integer")
