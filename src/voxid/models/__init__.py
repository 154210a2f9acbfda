"""Speaker model architectures, built by name.

``MODELS`` maps a name to a builder ``(n_classes, feature_config, **hparams) ->
SpeakerModel``. :func:`build_model` checks the hyperparameters, fills in the defaults and
records them in ``model.hparams`` so a checkpoint can rebuild the exact architecture. The
classical GMM baseline is separate: :class:`voxid.models.gmm.GmmClassifier`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from voxid.errors import ConfigError
from voxid.models.base import SpeakerModel, count_parameters
from voxid.models.crnn import build_crnn
from voxid.models.ecapa import build_ecapa
from voxid.models.heads import AAMSoftmax, LinearHead
from voxid.models.resnet import build_resnet34
from voxid.models.seed_cnn import build_seed_cnn

__all__ = [
    "MODELS",
    "AAMSoftmax",
    "LinearHead",
    "SpeakerModel",
    "build_model",
    "count_parameters",
    "default_feature_config",
]

MODELS: dict[str, Callable[..., SpeakerModel]] = {
    "seed_cnn": build_seed_cnn,
    "crnn": build_crnn,
    "ecapa": build_ecapa,
    "resnet34": build_resnet34,
}

_DEFAULT_FEATURES = {
    "seed_cnn": "image",
    "crnn": "logmel",
    "ecapa": "fbank",
    "resnet34": "fbank",
    "gmm": "mfcc",
}


def default_feature_config(name: str) -> Any:
    """The :class:`voxid.features.FeatureConfig` preset a model is designed for.

    >>> default_feature_config("ecapa").kind
    'fbank'
    """
    from voxid.features import FeatureConfig

    if name not in _DEFAULT_FEATURES:
        raise ConfigError(f"model={name!r}: unknown; choose from {sorted(_DEFAULT_FEATURES)}")
    return getattr(FeatureConfig, _DEFAULT_FEATURES[name])()


def build_model(
    name: str, n_classes: int, feature_config: Any = None, **hparams: Any
) -> SpeakerModel:
    """Build a registered architecture.

    Arguments
    ---------
    name : one of ``MODELS``.
    n_classes : number of speakers the head classifies; 0 for an encoder whose head knows
        nobody (a shipped base model: speakers are enrolled, not trained on).
    feature_config : a ``FeatureConfig`` (or its ``to_dict()``); None for the model's preset.
    **hparams : architecture keyword arguments (see each ``build_*``); unknown ones raise
        :class:`ConfigError`.

    >>> model = build_model("crnn", n_classes=5, gru_hidden=32)
    >>> model.hparams["gru_hidden"], model.hparams["margin"]
    (32, 0.25)
    >>> build_model("crnn", n_classes=5, gru_size=32)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    voxid.errors.ConfigError: gru_size: not a hyperparameter of crnn (...)
    """
    if name not in MODELS:
        raise ConfigError(f"model={name!r}: unknown; choose from {sorted(MODELS)}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 0:
        raise ConfigError(f"n_classes={n_classes!r}: must be a non-negative integer")
    if feature_config is None:
        feature_config = default_feature_config(name)
    elif isinstance(feature_config, dict):
        from voxid.features import FeatureConfig

        feature_config = FeatureConfig.from_dict(feature_config)
    # An LDA projection fitted after training (voxid fit-lda) is part of the model, so a
    # checkpoint's hparams carry its size and its weights load like any other.
    projection_dim = hparams.pop("projection_dim", None)
    cohort_size = int(hparams.pop("projection_cohort", 0) or 0)
    builder = MODELS[name]
    params = inspect.signature(builder).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    for key in hparams:
        if key not in allowed:
            raise ConfigError(f"{key}: not a hyperparameter of {name} ({', '.join(allowed)})")
    full = {key: hparams.get(key, params[key].default) for key in allowed}
    # Lists, not tuples, so the hparams survive YAML/JSON and weights_only checkpoints alike.
    full = {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}
    model = builder(n_classes, feature_config, **full)
    model.hparams = full
    if projection_dim is not None:
        from voxid.models.projection import LdaProjection

        model.set_projection(LdaProjection(model.embedding_dim, int(projection_dim), cohort_size))
    return model
