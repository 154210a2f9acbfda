"""The model card: what a voxid model file says about itself, typed and checked on load.

Every model file carries its description: the `"voxid"` dict of a torch checkpoint
(`best.ckpt`, `model.pt`), the `voxid` JSON of an ONNX export's `metadata_props`, and a GMM
run's `model.json`. `ModelCard.from_dict` reads any of them (files written by every voxid
version so far: absent fields get the defaults those versions meant) and refuses a wrong
type with one `ModelError` naming the file and the field; `ModelCard.to_dict` writes the
same layout back, so files written now and before are interchangeable. This module is the
only one that knows that layout.

The sample rate is held once (`ModelCard.sample_rate`); on disk it sits in both the
`feature_config` and the `audio_config` sections, which must agree.

No torch here: the ONNX backend reads cards without importing it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voxid.errors import ConfigError, ModelError
from voxid.vad import VAD_METHODS, VadConfig

if TYPE_CHECKING:
    from voxid.features import FeatureConfig

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "MODES",
    "AudioSettings",
    "ModelCard",
    "ModelSpec",
    "OnnxInfo",
    "Scoring",
]

#: The sample rate of a description that names none, and of voxid's recipes (16 kHz).
DEFAULT_SAMPLE_RATE = 16000
#: What a model was trained to do.
MODES = ("identify", "authenticate")

# The on-disk keys each part of the card reads; anything else is kept in `extra` as is.
_TOP_KEYS = frozenset(
    {
        "model_name", "hparams", "embedding_dim", "feature_config", "audio_config", "labels",
        "mode", "members", "auth_scoring", "train_speakers", "threshold", "threshold_kind",
        "projection", "model_fingerprint", "data_fingerprint", "init", "base", "created",
        "voxid_version", "onnx_precision", "onnx_outputs", "onnx_weights_sha256",
    }
)  # fmt: skip
_AUDIO_KEYS = frozenset({"sample_rate", "normalize", "vad", "chunk"})
#: Longest `audio_config.chunk.min_input_seconds`: past it, a repeated clip is mostly echo.
MAX_MIN_INPUT_SECONDS = 10.0


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check(ok: bool, source: str, key: str, value: object, want: str) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
        raise ModelError(f"{source}: metadata {key} is {shown}, expected {want}")


def _section(parent: Mapping[str, Any], key: str, source: str, prefix: str = "") -> dict[str, Any]:
    value = parent.get(key)
    _check(value is None or isinstance(value, dict), source, prefix + key, value, "an object")
    return dict(value or {})


def _optional_section(
    parent: Mapping[str, Any], key: str, source: str, prefix: str = ""
) -> dict[str, Any] | None:
    return None if parent.get(key) is None else _section(parent, key, source, prefix)


def _names(meta: Mapping[str, Any], key: str, source: str) -> tuple[str, ...] | None:
    value = meta.get(key)
    ok = value is None or (isinstance(value, list) and all(isinstance(x, str) for x in value))
    _check(ok, source, key, value, "a list of names")
    return None if value is None else tuple(value)


def _string(meta: Mapping[str, Any], key: str, source: str, prefix: str = "") -> str | None:
    value = meta.get(key)
    _check(value is None or isinstance(value, str), source, prefix + key, value, "a string")
    return value


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild the network: `build_model(name, **hparams)`, and its embedding size.

    `embedding_dim` is None when the file does not say (0 for a GMM, which has none).
    """

    name: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    embedding_dim: int | None = None


@dataclass(frozen=True)
class AudioSettings:
    """How the training store prepared its recordings (the store's `audio_config`, less the
    sample rate, which the card holds): gain scaling, VAD and chunk settings as stored."""

    normalize: str | None = None
    vad: dict[str, Any] | None = None
    chunk: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chunk_seconds(self) -> float | None:
        """The training chunk length in seconds, or None when not stored."""
        seconds = (self.chunk or {}).get("seconds")
        return None if seconds is None else float(seconds)

    @property
    def min_input_seconds(self) -> float | None:
        """The shortest input the model embeds (speech shorter than it is repeated to this
        length and embedded in one pass), or None: repeated to one chunk."""
        seconds = (self.chunk or {}).get("min_input_seconds")
        return None if seconds is None else float(seconds)

    def vad_config(self, source: str = "model") -> VadConfig:
        """The `VadConfig` these settings describe (unknown stored keys are ignored).

        A model stored before the VAD had a `method` gets the default, Silero with the
        level floor: its energy settings would call noise and hum speech (issue #15).
        """
        names = {f.name for f in dataclasses.fields(VadConfig)}
        try:
            return VadConfig(**{k: v for k, v in (self.vad or {}).items() if k in names})
        except ConfigError as exc:  # names the VAD field
            raise ModelError(f"{source}: audio_config.{exc}") from None


@dataclass(frozen=True)
class Scoring:
    """The back-end a model's scores pass through: its decision threshold (and the score it
    applies to, e.g. `asnorm:far=0.01`), and where its LDA projection came from (`kind`,
    `store`, `split`, `speakers`, `items`, `cohort`: whether an AS-norm cohort is stored)."""

    threshold: float | None = None
    threshold_kind: str | None = None
    projection: dict[str, Any] | None = None

    @property
    def has_cohort(self) -> bool:
        """True when the projection's fit also stored a score-normalisation cohort."""
        return bool((self.projection or {}).get("cohort"))


@dataclass(frozen=True)
class OnnxInfo:
    """What an ONNX export adds: precision (`fp32`/`int8`), output names, and the sha256
    that ties the fingerprint to the graph's weights (None in files exported before it)."""

    precision: str | None = None
    outputs: tuple[str, ...] | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class ModelCard:
    """Everything a model file says about itself; build one with `from_dict` or
    `voxid.checkpoint.make_card`, change one with `dataclasses.replace`.

    >>> card = ModelCard.from_dict({"labels": ["ann"], "audio_config": {"sample_rate": 8000}})
    >>> card.sample_rate, card.labels, card.mode
    (8000, ('ann',), 'identify')
    >>> ModelCard.from_dict(card.to_dict(), "again") == card
    True
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    #: The one sample rate of the model: its front-end's and its training audio's.
    sample_rate: int = DEFAULT_SAMPLE_RATE
    #: The `FeatureConfig` fields as stored, without `sample_rate`.
    features: dict[str, Any] = field(default_factory=dict)
    #: None for a model not trained from a store (no `audio_config`).
    audio: AudioSettings | None = None
    #: Speaker names by class index (`("outsider", "member")` for a binary head).
    labels: tuple[str, ...] = ()
    mode: str = "identify"
    members: tuple[str, ...] = ()
    #: How an authentication model scores members (`binary` or `speakers`), or None.
    auth_scoring: str | None = None
    #: Every speaker seen in training; None when the file does not say (then `labels`).
    train_speakers: tuple[str, ...] | None = None
    scoring: Scoring = field(default_factory=Scoring)
    #: The sha256 prefix of the weights (`voxid.checkpoint.model_fingerprint`).
    fingerprint: str | None = None
    data_fingerprint: str | None = None
    #: The model a fine-tuned run started from, or None.
    init: str | None = None
    #: A shipped model's provenance (`trained_speakers`, `source_run`, `init`), or None.
    base: dict[str, Any] | None = None
    created: str | None = None
    voxid_version: str | None = None
    onnx: OnnxInfo | None = None
    #: Fields this version does not know, kept so a rewrite loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    # -- derived ----------------------------------------------------------------------
    @property
    def speakers_heard(self) -> tuple[str, ...]:
        """The training speakers (`train_speakers`, else the labels)."""
        return self.labels if self.train_speakers is None else self.train_speakers

    @property
    def is_binary_authenticator(self) -> bool:
        """True for an authentication model whose classes are member/outsider, not people."""
        return self.mode == "authenticate" and self.auth_scoring != "speakers"

    @property
    def feature_dict(self) -> dict[str, Any]:
        """The stored `feature_config` section, sample rate included."""
        out: dict[str, Any] = {}
        for key, value in self.features.items():
            out[key] = value
            if key == "kind":
                out["sample_rate"] = self.sample_rate
        out.setdefault("sample_rate", self.sample_rate)
        return out

    def feature_config(self) -> FeatureConfig:
        """The model's `FeatureConfig` (imports torch: for rebuilding the network)."""
        from voxid.features import FeatureConfig

        return FeatureConfig.from_dict(self.feature_dict)

    # -- reading and writing ----------------------------------------------------------
    @classmethod
    def from_dict(cls, meta: object, source: str = "model") -> ModelCard:
        """Read a stored description; a wrong type raises one `ModelError` naming `source`
        (the file) and the field. Absent fields get their defaults.

        >>> ModelCard.from_dict({"mode": "guess"}, "m.onnx")
        Traceback (most recent call last):
        ...
        voxid.errors.ModelError: m.onnx: metadata mode is 'guess', expected identify or authenticate
        """
        if not isinstance(meta, dict):
            raise ModelError(f"{source}: voxid metadata is a {type(meta).__name__}, not an object")
        labels = _names(meta, "labels", source) or ()
        members = _names(meta, "members", source) or ()
        train_speakers = _names(meta, "train_speakers", source)
        name = _string(meta, "model_name", source)
        fingerprint = _string(meta, "model_fingerprint", source)
        auth_scoring = _string(meta, "auth_scoring", source)
        threshold_kind = _string(meta, "threshold_kind", source)
        dim = meta.get("embedding_dim")
        # A GMM has no embeddings: its run says 0.
        ok = dim is None or _is_count(dim) or (name == "gmm" and type(dim) is int and dim == 0)

        _check(ok, source, "embedding_dim", dim, "a positive integer")
        threshold = meta.get("threshold")
        ok = threshold is None or (_is_number(threshold) and math.isfinite(threshold))
        _check(ok, source, "threshold", threshold, "a finite number or null")
        mode = meta.get("mode")
        _check(mode is None or mode in MODES, source, "mode", mode, " or ".join(MODES))
        hparams = _section(meta, "hparams", source)
        audio = _section(meta, "audio_config", source)
        features = _section(meta, "feature_config", source)
        rates = {}
        for section_name, section in (("audio_config", audio), ("feature_config", features)):
            rate = section.get("sample_rate")
            _check(rate is None or _is_count(rate), source, f"{section_name}.sample_rate", rate,
                   "a positive integer (Hz)")  # fmt: skip
            if rate is not None:
                rates[section_name] = rate
        if len(set(rates.values())) > 1:
            raise ModelError(
                f"{source}: metadata audio_config.sample_rate is {rates['audio_config']}, but "
                f"feature_config.sample_rate is {rates['feature_config']} (they must agree)"
            )
        sample_rate = next(iter(rates.values()), DEFAULT_SAMPLE_RATE)
        features.pop("sample_rate", None)
        outputs = _names(meta, "onnx_outputs", source)
        precision = _string(meta, "onnx_precision", source)
        digest = _string(meta, "onnx_weights_sha256", source)
        is_onnx = any(k in meta for k in ("onnx_precision", "onnx_outputs", "onnx_weights_sha256"))
        return cls(
            model=ModelSpec(name, hparams, None if dim is None else int(dim)),
            sample_rate=int(sample_rate),
            features=features,
            audio=_audio_settings(audio, source) if "audio_config" in meta and audio else None,
            labels=labels,
            mode=mode or "identify",
            members=members,
            auth_scoring=auth_scoring,
            train_speakers=train_speakers,
            scoring=Scoring(
                None if threshold is None else float(threshold),
                threshold_kind,
                _optional_section(meta, "projection", source),
            ),
            fingerprint=fingerprint,
            data_fingerprint=_string(meta, "data_fingerprint", source),
            init=_string(meta, "init", source),
            base=_optional_section(meta, "base", source),
            created=_string(meta, "created", source),
            voxid_version=_string(meta, "voxid_version", source),
            onnx=OnnxInfo(precision, outputs, digest) if is_onnx else None,
            extra={k: v for k, v in meta.items() if k not in _TOP_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored layout (plain JSON types), as `from_dict` reads it back."""
        audio: dict[str, Any] = {}
        if self.audio is not None:
            audio = {"sample_rate": self.sample_rate, "normalize": self.audio.normalize}
            if self.audio.vad is not None:
                audio["vad"] = dict(self.audio.vad)
            if self.audio.chunk is not None:
                audio["chunk"] = dict(self.audio.chunk)
            audio.update(self.audio.extra)
        out: dict[str, Any] = {
            "model_name": self.model.name,
            "hparams": dict(self.model.hparams),
            "feature_config": self.feature_dict,
            "audio_config": audio,
            "labels": list(self.labels),
            "mode": self.mode,
            "members": list(self.members),
            "auth_scoring": self.auth_scoring,
            "threshold": self.scoring.threshold,
            "threshold_kind": self.scoring.threshold_kind,
            "data_fingerprint": self.data_fingerprint,
            "embedding_dim": self.model.embedding_dim,
            "train_speakers": None if self.train_speakers is None else list(self.train_speakers),
            "init": self.init,
            "model_fingerprint": self.fingerprint,
            "created": self.created,
            "voxid_version": self.voxid_version,
        }
        if self.base is not None:
            out["base"] = dict(self.base)
        if self.scoring.projection is not None:
            out["projection"] = dict(self.scoring.projection)
        if self.onnx is not None:
            out["onnx_precision"] = self.onnx.precision
            out["onnx_outputs"] = None if self.onnx.outputs is None else list(self.onnx.outputs)
            if self.onnx.weights_sha256 is not None:
                out["onnx_weights_sha256"] = self.onnx.weights_sha256
        out.update(self.extra)
        return out

    def with_threshold(self, threshold: float | None, kind: str | None) -> ModelCard:
        """This card with another decision threshold (None clears it)."""
        value = None if threshold is None else float(threshold)
        scoring = dataclasses.replace(self.scoring, threshold=value, threshold_kind=kind)
        return dataclasses.replace(self, scoring=scoring)


def _audio_settings(audio: dict[str, Any], source: str) -> AudioSettings:
    normalize = audio.get("normalize")
    _check(normalize is None or isinstance(normalize, str), source, "audio_config.normalize",
           normalize, "a string or null")  # fmt: skip
    vad = _optional_section(audio, "vad", source, "audio_config.")
    for f in dataclasses.fields(VadConfig):
        if vad is None or f.name not in vad:
            continue
        value, key = vad[f.name], f"audio_config.vad.{f.name}"
        if f.type in (str, "str"):
            _check(value in VAD_METHODS, source, key, value, " or ".join(VAD_METHODS))
        elif f.type in (bool, "bool"):
            _check(isinstance(value, bool), source, key, value, "true or false")
        else:
            _check(_is_number(value), source, key, value, "a number")
    chunk = _optional_section(audio, "chunk", source, "audio_config.")
    seconds = (chunk or {}).get("seconds")
    ok = seconds is None or (_is_number(seconds) and 0 < seconds < float("inf"))
    _check(ok, source, "audio_config.chunk.seconds", seconds, "a positive number")
    shortest = (chunk or {}).get("min_input_seconds")
    ok = shortest is None or (
        _is_number(shortest) and (seconds or 0) <= shortest <= MAX_MIN_INPUT_SECONDS
    )
    want = f"a number of seconds from the chunk length to {MAX_MIN_INPUT_SECONDS:g}"
    _check(ok, source, "audio_config.chunk.min_input_seconds", shortest, want)
    return AudioSettings(
        normalize=normalize,
        vad=vad,
        chunk=chunk,
        extra={k: v for k, v in audio.items() if k not in _AUDIO_KEYS},
    )
