"""The Mel-spectrogram image CNN: a small VGG-like classifier on a 3-channel spectrogram image.

The layer table of the paper (first convolution 198 x 198, flatten 33,856) fits a 200 x 200
image, although its text says 400 x 400; 200 is the default and ``image_size=400`` gives the
textual variant. Three unpadded 3 x 3 convolutions (32, 32, 64 filters), each with ReLU and
2 x 2 max-pooling, then dense 64, ReLU, dropout 0.5 and dense ``N`` (softmax at inference).
With 10 classes at 200 x 200 that is exactly 2,196,138 parameters.

It is a closed-set classifier: its 64-d penultimate layer is exposed by ``embed`` but was
not trained for cosine scoring, so ``is_embedding_model`` is False.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from voxid.errors import ConfigError
from voxid.models.base import SpeakerModel, check_positive, check_probability
from voxid.models.heads import LinearHead


def _conv_out(size: int) -> int:
    # An unpadded 3x3 convolution removes 2 pixels; the 2x2 pool halves (floor).
    return (size - 2) // 2


class SeedCNNEncoder(nn.Module):
    """Spectrogram image ``(B, 3, S, S)`` (or grey ``(B, S, S)`` in [0, 1], coloured by
    :func:`voxid.features.colorize`) to the 64-d penultimate activations.

    Arguments
    ---------
    image_size : side ``S`` of the square input image.
    hidden : width of the dense layer.
    dropout : dropout after the dense layer.

    >>> SeedCNNEncoder(image_size=64)(torch.rand(2, 3, 64, 64)).shape
    torch.Size([2, 64])
    """

    def __init__(self, image_size: int = 200, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        side = _conv_out(_conv_out(_conv_out(image_size)))
        if side < 1:
            raise ConfigError(f"image_size={image_size}: too small for three conv/pool stages")
        self.image_size = image_size
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.dense = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, hidden), nn.ReLU(), nn.Dropout(dropout)
        )

    def forward(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 3, S, S)`` or ``(B, S, S)`` -> ``(B, hidden)``; ``lengths`` is ignored
        (the image is a fixed-size picture of the whole clip)."""
        if images.dim() == 3:
            from voxid.features import colorize

            images = colorize(images)
        out: torch.Tensor = self.dense(self.features(images))
        return out


def build_seed_cnn(
    n_classes: int,
    feature_config: Any,
    *,
    image_size: int | None = None,
    hidden: int = 64,
    dropout: float = 0.5,
) -> SpeakerModel:
    """The Mel-spectrogram CNN classifier.

    ``image_size`` defaults to the feature config's; both must agree.

    >>> from voxid.models import build_model
    >>> model = build_model("seed_cnn", n_classes=10).eval()
    >>> model(torch.rand(2, 3, 200, 200)).shape
    torch.Size([2, 10])
    """
    size = int(feature_config.image_size) if image_size is None else image_size
    check_positive(image_size=size, hidden=hidden)
    check_probability(dropout=dropout)
    if feature_config.kind != "image":
        raise ConfigError(f"feature_config.kind={feature_config.kind!r}: seed_cnn needs 'image'")
    if size != feature_config.image_size:
        raise ConfigError(
            f"image_size={size}: differs from feature_config.image_size={feature_config.image_size}"
        )
    encoder = SeedCNNEncoder(size, hidden, dropout)
    return SpeakerModel(
        "seed_cnn",
        encoder,
        LinearHead(hidden, n_classes),
        feature_config,
        embedding_dim=hidden,
        n_classes=n_classes,
        is_embedding_model=False,
    )
