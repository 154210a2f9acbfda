"""`SpeakerModel`: one object that holds a frontend, an encoder and a training head.

``frontend`` (waveform ``(B, samples)`` -> features ``(B, T, F)``) is fixed signal
processing from :mod:`voxid.features`; ``encoder`` (features -> embedding ``(B, D)``) is the
trained network; ``head`` (embedding -> logits) is only needed for training and closed-set
classification. Verification and enrolment use ``embed``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxid.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from voxid.models.projection import LdaProjection


def feature_dim(feature_config: Any) -> int:
    """Size of the last feature axis a frontend built from ``feature_config`` produces.

    >>> from types import SimpleNamespace
    >>> feature_dim(SimpleNamespace(kind="mfcc", n_mfcc=20))
    60
    """
    kind = feature_config.kind
    if kind in ("logmel", "fbank"):
        return int(feature_config.n_mels)
    if kind == "mfcc":
        return 3 * int(feature_config.n_mfcc)
    if kind == "image":
        return int(feature_config.image_size)
    raise ConfigError(f"feature_config.kind={kind!r}: no fixed feature size for a model")


class SpeakerModel(nn.Module):
    """A speaker model: ``frontend -> encoder -> embedding``, with ``head`` kept apart.

    Build one with :func:`voxid.models.build_model`, which also fills ``hparams`` so that
    ``build_model(model.name, model.n_classes, model.feature_config, **model.hparams)``
    rebuilds the same architecture for a checkpoint's ``state_dict``.

    Arguments
    ---------
    name : registry name of the architecture.
    encoder : module mapping features (and optional ``lengths``) to ``(B, D)``.
    head : module mapping ``(B, D)`` (and optional labels) to logits ``(B, N)``.
    feature_config : the :class:`voxid.features.FeatureConfig` the encoder expects.
    embedding_dim : ``D``.
    n_classes : ``N``.
    is_embedding_model : False for pure classifiers whose penultimate layer is not trained
        as a speaker embedding (``seed_cnn``); ``embed`` then skips L2 normalisation.
    hparams : keyword arguments that rebuild this architecture.

    >>> from voxid.models import build_model
    >>> model = build_model("ecapa", n_classes=4, channels=32, mfa_channels=96,
    ...                     se_channels=8, attention_channels=16, embedding_dim=24).eval()
    >>> feats = torch.randn(2, 50, 80)
    >>> model(feats).shape, model.embed(feats).shape
    (torch.Size([2, 4]), torch.Size([2, 24]))
    """

    def __init__(
        self,
        name: str,
        encoder: nn.Module,
        head: nn.Module,
        feature_config: Any,
        embedding_dim: int,
        n_classes: int,
        is_embedding_model: bool = True,
        hparams: dict[str, Any] | None = None,
    ):
        super().__init__()
        from voxid.features import build_frontend

        self.name = name
        self.feature_config = feature_config
        self.frontend = build_frontend(feature_config)
        self.encoder = encoder
        self.head = head
        self.embedding_dim = int(embedding_dim)
        self.n_classes = int(n_classes)
        self.is_embedding_model = is_embedding_model
        self.hparams: dict[str, Any] = dict(hparams or {})
        self.projection: LdaProjection | None = None
        self._mc_dropout = False

    def set_projection(self, projection: LdaProjection | None) -> None:
        """Apply `projection` (an `LdaProjection`) to every embedding from now on, or none.

        `embedding_dim` and ``hparams["projection_dim"]`` (and ``"projection_cohort"``, its
        cohort's size) follow, so checkpoints rebuild it.
        """
        if projection is not None and not self.is_embedding_model:
            raise ModelError(f"{self.name}: a classifier without embeddings takes no projection")
        if self.projection is not None:
            self.embedding_dim = int(self.projection.mean.shape[0])
        self.projection = projection
        self.hparams.pop("projection_dim", None)
        self.hparams.pop("projection_cohort", None)
        if projection is not None:
            self.embedding_dim = projection.out_dim
            self.hparams["projection_dim"] = projection.out_dim
            if projection.cohort is not None:
                self.hparams["projection_cohort"] = int(projection.cohort.shape[0])

    def finish_embedding(self, encoded: torch.Tensor) -> torch.Tensor:
        """The encoder's output ``(B, D)`` as the embedding that is scored: L2-normalised for
        embedding models, then projected (``(B, K)``) when the model has a projection."""
        return _finish(encoded, self.is_embedding_model, self.projection)

    def _check(self, features: torch.Tensor) -> None:
        expected = feature_dim(self.feature_config)
        if features.shape[-1] != expected:
            raise ModelError(
                f"{self.name}: features have {features.shape[-1]} bins on the last axis, "
                f"the model expects {expected} ({self.feature_config.kind})"
            )

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits ``(B, N)``; the head's margin applies only when ``labels`` are given.

        ``lengths`` (valid frames per item, ``(B,)``) keep padding out of pooling.
        """
        self._check(features)
        logits: torch.Tensor = self.head(self.encoder(features, lengths), labels)
        return logits

    def score_cohort(self) -> np.ndarray | None:
        """The cohort that scores are normalised against (AS-norm), float32 ``(S, K)``, or
        None."""
        cohort = None if self.projection is None else self.projection.cohort
        return None if cohort is None else cohort.detach().cpu().float().numpy()

    def class_bank(self) -> np.ndarray | None:
        """The training speakers' AAM class weights in embedding space, float32
        ``(N, D or K)``, for cosine scoring against them; None without a cosine head. With
        a projection the weights (class directions) go through it like embeddings do."""
        if not self.is_embedding_model or not hasattr(self.head, "cosine"):
            return None
        with torch.no_grad():
            bank = self.finish_embedding(cast(torch.Tensor, self.head.weight).detach())
        return bank.cpu().float().numpy()

    def embed(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings ``(B, D)``: L2-normalised (and projected, see `finish_embedding`) for
        embedding models; for ``seed_cnn`` the raw penultimate activations (its classifier
        was not trained for cosine scoring)."""
        self._check(features)
        return self.finish_embedding(self.encoder(features, lengths))

    def embed_waveform(self, wav: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` from waveforms ``(B, samples)`` (or one ``(samples,)``)."""
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        return self.embed(self.frontend(wav))

    def export_module(self) -> nn.Module:
        """A module ``waveform (B, samples) -> embedding (B, D)`` equal to ``embed_waveform``,
        for ONNX export (frontend, encoder and `finish_embedding`)."""
        return _WaveformEmbedder(self)

    def set_mc_dropout(self, enabled: bool) -> None:
        """Keep dropout sampling in eval mode (Monte-Carlo dropout) while BatchNorm keeps its
        running statistics; ``model.eval()`` and ``model.train()`` respect the setting."""
        self._mc_dropout = bool(enabled)
        self._apply_dropout_mode()

    @property
    def mc_dropout(self) -> bool:
        """Whether Monte-Carlo dropout is on."""
        return self._mc_dropout

    def train(self, mode: bool = True) -> SpeakerModel:
        """Set training mode; dropout stays active in eval mode under MC dropout."""
        super().train(mode)
        self._apply_dropout_mode()
        return self

    def _apply_dropout_mode(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.train(self.training or self._mc_dropout)
            elif isinstance(module, nn.GRU | nn.LSTM | nn.RNN) and module.dropout > 0:
                # RNN inter-layer dropout follows the module's own training flag.
                module.train(self.training or self._mc_dropout)


def _finish(encoded: torch.Tensor, normalize: bool, projection: nn.Module | None) -> torch.Tensor:
    if not normalize:
        return encoded
    emb = F.normalize(encoded, dim=1)
    return emb if projection is None else projection(emb)


class _WaveformEmbedder(nn.Module):
    # The model's parts as direct children: ONNX node names start with /frontend and
    # /encoder, which int8 export relies on to keep the front-end in fp32.
    def __init__(self, model: SpeakerModel):
        super().__init__()
        self.frontend, self.encoder = model.frontend, model.encoder
        self.projection, self.normalize = model.projection, model.is_embedding_model

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return _finish(self.encoder(self.frontend(wav)), self.normalize, self.projection)


def count_parameters(model: SpeakerModel) -> int:
    """Trainable parameters of the encoder and head (the fixed frontend is not counted).

    >>> from voxid.models import build_model
    >>> count_parameters(build_model("seed_cnn", n_classes=10))
    2196138
    """
    modules = [model.encoder, model.head]
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def encoder_defaults(encoder: type) -> dict[str, Any]:
    """The keyword defaults of an encoder class, for its builder's signature: each
    architecture's defaults are declared once, in the encoder.

    >>> encoder_defaults(nn.Linear)
    {'bias': True, 'device': None, 'dtype': None}
    """
    params = inspect.signature(encoder).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def check_positive(**values: float) -> None:
    """Raise :class:`ConfigError` naming the first value that is not positive.

    >>> check_positive(channels=0)
    Traceback (most recent call last):
    ...
    voxid.errors.ConfigError: channels=0: must be positive
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{name}={value!r}: must be positive")


def check_probability(**values: float) -> None:
    """Raise :class:`ConfigError` unless every value is a probability in ``[0, 1)``.

    >>> check_probability(dropout=0.3)
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ConfigError(f"{name}={value!r}: must be in [0, 1)")
