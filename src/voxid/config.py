"""Training recipes: plain dataclasses read from YAML, with `key=value` overrides.

A recipe (`configs/<model>.yaml`) looks like::

    model: {name: crnn, dropout: 0.3}   # name + the keyword arguments of build_model
    mode: identify                      # or authenticate, with members: [...]
    batch_size: 32
    augment: {spec_augment: true}

Overrides use dotted keys (`model.channels=64`, `augment.noise_snr=[10, 30]`); values are
read as YAML, so `true`, `1e-3`, `null` and `[a, b]` mean what they say.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from voxid.errors import ConfigError

PACKAGED = Path(__file__).resolve().parent / "configs"
MODES = ("identify", "authenticate")
AUTH_SCORINGS = ("binary", "speakers")
MONITORS = {"val_loss": "min", "val_acc": "max", "val_f1": "max", "val_eer": "min"}
HEAD_INITS = ("random", "imprint")
PRECISIONS = ("auto", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "64-true")


@dataclass
class AugmentConfig:
    """On-the-fly augmentation of training batches (validation and test stay clean).

    Arguments:
        spec_augment: mask frequency bands and time spans (`voxid.augment.SpecAugment`).
        freq_mask, time_mask: widest band (bins) and span (frames) masked.
        n_freq, n_time: how many bands and spans per example.
        noise_snr: `[low, high]` dB: Gaussian noise at an SNR drawn per example, added to
            the waveform (waveform stores) or to the feature map (feature stores).
        noise_prob: share of examples that get noise.
        real_noise_dir: a folder of noise recordings mixed into training waveforms (waveform
            stores only): a model that hears the same backgrounds behind every speaker
            cannot use the background of a recording session to tell speakers apart.
        real_noise_snr, real_noise_prob: SNR range (dB) and share of examples for it.
        narrowband_prob: share of training waveforms low-passed as a telephone or an 8-kHz
            recording is (waveform stores only), so a model trained on wideband speech
            does not lean on the band above 4 kHz that such recordings lack.
        narrowband_hz: `[low, high]`: the cutoff, drawn per example.
    """

    spec_augment: bool = False
    freq_mask: int = 8
    time_mask: int = 20
    n_freq: int = 2
    n_time: int = 2
    noise_snr: list[float] | None = None
    noise_prob: float = 0.5
    real_noise_dir: str | None = None
    real_noise_snr: list[float] = field(default_factory=lambda: [5.0, 30.0])
    real_noise_prob: float = 0.5
    narrowband_prob: float = 0.0
    narrowband_hz: list[float] = field(default_factory=lambda: [3400.0, 4000.0])


@dataclass
class TrainConfig:
    """Everything one training run needs besides the data and the output folder.

    `mode: authenticate` scores members against outsiders in one of two ways
    (`auth_scoring`): `binary`, the CNN-RNN paper's two-class head, whose score is
    P(member); or `speakers`, an N-way AAM-softmax over every training speaker, whose score
    is the highest cosine between the input's embedding and a member's class weight. The
    binary head learns what the seen outsiders are not; the speaker head learns what the
    members are, which is what transfers to outsiders never seen in training.

    `monitor: val_eer` picks epochs by the verification EER among the speakers of
    `heldout_split` (never trained on; `voxid prepare --heldout-speakers N`), all pairs of
    their items scored by cosine, rather than by classification of the training speakers.
    `distill_targets` (a `voxid teacher` file) adds distillation from a pretrained encoder
    with weight `distill_weight` (`voxid.training.distill`).

    Fine-tuning: `init: base` (a shipped model's name, or any voxid model file or run)
    starts the front-end and encoder from that model's weights, with a new head for this
    store's speakers; the recipe's architecture must be the same (`voxid train base` or
    `ecapa_small` fit the base model). `freeze_encoder_epochs` trains only the head for
    that many epochs first; `encoder_lr_scale` multiplies the encoder's learning rate
    (0.1: move the pretrained weights ten times more gently than the new head). The run's
    card keeps the starting model's short-speech rule (`min_input_seconds`) unless its
    store sets one (`voxid.training.run.inherited_audio_config`). `head_init: imprint`
    starts that new head from the starting encoder's mean embedding of each class's
    training items instead of random directions (`voxid.training.imprint`): training begins
    at a cosine classifier that already fits, so the first steps' large gradients do not
    bend the pretrained embedding space towards arbitrary class directions.
    `soup: N` (with `init` and `head_init: imprint`) trains the recipe N times, seeds
    `seed` to `seed + N - 1`, into `seed<K>` folders of the run, and makes the run's model
    the mean of their weights (`voxid.training.soup`): one model's cost at inference, less
    of one seed's luck in its scores. `wise: A` (0 < A < 1, with `init`) moves the
    finished run's front-end and encoder back to the point a share A of the way from the
    starting weights to the fine-tuned ones, and `keep_lda: true` keeps the starting
    model's LDA projection and cohort (`voxid.training.wise`): a fine-tuned model that
    keeps more of what the pretrained one knew about voices it never heard.

    `average_epochs: N` makes the run's model the mean of its weights at the ends of the
    schedule's last N epochs (`voxid.training.average`, WeSpeaker's model averaging), in
    place of the one epoch the monitor picks; it needs `patience: 0`.

    >>> cfg = TrainConfig(model="crnn", mode="authenticate", members=["alice"])
    >>> apply_overrides(cfg, ["batch_size=8", "model.dropout=0.1"]).hparams
    {'dropout': 0.1}
    """

    model: str
    hparams: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] | None = None
    mode: str = "identify"
    members: list[str] = field(default_factory=list)
    auth_scoring: str = "binary"
    speakers: list[str] | None = None
    batch_size: int = 32
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    seed: int = 0
    deterministic: bool = True
    num_workers: int = 0
    cache: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    balanced: bool = False
    class_weights: bool = True
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    mc_samples: int = 0
    target_far: float = 0.01
    max_minutes: float | None = None
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0
    log_every_n_steps: int = 1
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    heldout_split: str = "heldout"
    distill_targets: str | None = None
    distill_weight: float = 1.0
    init: str | None = None
    encoder_lr_scale: float = 1.0
    freeze_encoder_epochs: int = 0
    head_init: str = "random"
    soup: int = 1
    wise: float = 1.0
    keep_lda: bool = False
    average_epochs: int = 0

    def validate(self) -> TrainConfig:
        """Raise `ConfigError` naming the first bad key; return self when all is well."""
        _check(isinstance(self.model, str) and self.model, "model", "needs a model name")
        _check(self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}")
        if self.mode == "authenticate":
            _check(bool(self.members), "members", "authenticate mode needs a list of members")
        _check(
            self.auth_scoring in AUTH_SCORINGS,
            "auth_scoring",
            f"must be one of {', '.join(AUTH_SCORINGS)}",
        )
        _check(_str_list(self.members), "members", "must be a list of speaker names")
        _check(self.speakers is None or _str_list(self.speakers), "speakers", "must be a list")
        for key in ("batch_size", "epochs", "num_nodes", "log_every_n_steps"):
            _check(
                _int(getattr(self, key)) and getattr(self, key) >= 1, key, "must be an integer >= 1"
            )
        for key in ("patience", "num_workers", "mc_samples", "seed"):
            _check(
                _int(getattr(self, key)) and getattr(self, key) >= 0, key, "must be an integer >= 0"
            )
        for key in ("lr", "weight_decay", "min_delta"):
            _check(
                _num(getattr(self, key)) and getattr(self, key) >= 0, key, "must be a number >= 0"
            )
        _check(_num(self.target_far) and 0 < self.target_far < 1, "target_far", "must be in (0, 1)")
        _check(
            _num(self.distill_weight) and self.distill_weight >= 0,
            "distill_weight",
            "must be a number >= 0",
        )
        _check(
            self.distill_targets is None or isinstance(self.distill_targets, str),
            "distill_targets",
            "must be the path of a voxid teacher file",
        )
        _check(
            self.init is None or isinstance(self.init, str), "init", "must be a model path or name"
        )
        _check(
            _num(self.encoder_lr_scale) and self.encoder_lr_scale >= 0,
            "encoder_lr_scale",
            "must be a number >= 0",
        )
        _check(
            _int(self.freeze_encoder_epochs) and self.freeze_encoder_epochs >= 0,
            "freeze_encoder_epochs",
            "must be an integer >= 0",
        )
        _check(self.head_init in HEAD_INITS, "head_init", f"must be one of {', '.join(HEAD_INITS)}")
        _check(
            self.head_init == "random" or self.init is not None,
            "head_init",
            "imprint needs a pretrained encoder to embed with (set init, e.g. init=base)",
        )
        _check(_int(self.soup) and self.soup >= 1, "soup", "must be an integer >= 1")
        _check(
            self.soup == 1 or (self.init is not None and self.head_init == "imprint"),
            "soup",
            "averages runs that start alike: set init (e.g. init=base) and head_init=imprint",
        )
        _check(
            _num(self.wise) and 0 < self.wise <= 1,
            "wise",
            "must be a number above 0 and at most 1 (1: the fine-tuned weights as they are)",
        )
        _check(isinstance(self.keep_lda, bool), "keep_lda", "must be true or false")
        _check(
            (self.wise == 1 and self.keep_lda is False) or self.init is not None,
            "wise" if self.wise != 1 else "keep_lda",
            "takes from the model a run starts from: set init (e.g. init=base)",
        )
        _check(
            _int(self.average_epochs) and 0 <= self.average_epochs <= self.epochs,
            "average_epochs",
            "must be an integer from 0 to epochs",
        )
        _check(
            not self.average_epochs or self.patience == 0,
            "average_epochs",
            "averages the schedule's last epochs, which early stopping would cut: set patience=0",
        )
        _check(self.monitor in MONITORS, "monitor", f"must be one of {', '.join(MONITORS)}")
        _check(
            self.monitor != "val_eer" or self.mode == "identify" or self.auth_scoring == "speakers",
            "monitor",
            "val_eer needs speaker embeddings (mode identify, or auth_scoring speakers)",
        )
        if _int(self.precision):
            self.precision = str(self.precision)
        _check(str(self.precision) in PRECISIONS, "precision", f"must be one of {PRECISIONS}")
        _check(
            self.devices == "auto" or (_int(self.devices) and self.devices >= 1),
            "devices",
            "must be a positive integer or 'auto'",
        )
        _check(
            self.max_minutes is None or (_num(self.max_minutes) and self.max_minutes > 0),
            "max_minutes",
            "must be a positive number of minutes",
        )
        for key in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            _check(_num(value) and value > 0, key, "must be a fraction in (0, 1] or a count")
        _check(isinstance(self.hparams, dict), "model", "must be a name or a mapping")
        _check_hparams(self.model, self.hparams)
        _check(self.features is None or isinstance(self.features, dict), "features", "mapping")
        aug = self.augment
        for key in ("freq_mask", "time_mask", "n_freq", "n_time"):
            _check(_int(getattr(aug, key)) and getattr(aug, key) >= 0, f"augment.{key}", ">= 0")
        for key in ("noise_prob", "real_noise_prob", "narrowband_prob"):
            value = getattr(aug, key)
            _check(_num(value) and 0 <= value <= 1, f"augment.{key}", "must be in [0, 1]")
        for key in ("noise_snr", "real_noise_snr"):
            snr = getattr(aug, key)
            if snr is None:
                continue
            ok = isinstance(snr, list) and len(snr) == 2
            ok = ok and all(_num(v) for v in snr) and snr[0] <= snr[1]
            _check(ok, f"augment.{key}", "must be [low, high] in dB with low <= high")
        band = aug.narrowband_hz
        ok = isinstance(band, list) and len(band) == 2 and all(_num(v) for v in band)
        _check(ok and 0 < band[0] <= band[1], "augment.narrowband_hz",
               "must be [low, high] in Hz with 0 < low <= high")  # fmt: skip
        _check(
            aug.real_noise_dir is None or isinstance(aug.real_noise_dir, str),
            "augment.real_noise_dir",
            "must be a folder path",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The recipe as YAML-ready plain data (the model section folds in `hparams`)."""
        data = dataclasses.asdict(self)
        data["model"] = {"name": data.pop("model"), **data.pop("hparams")}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build and validate a config from plain data (unknown keys are a `ConfigError`)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: must be a mapping of keys to values")
        data = dict(data)
        model = data.pop("model", None)
        if isinstance(model, dict):
            model = dict(model)
            name, hparams = model.pop("name", None), model
        else:
            name, hparams = model, {}
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: 'model' needs a name (model: crnn or model.name)")
        augment = data.pop("augment", None) or {}
        if not isinstance(augment, dict):
            raise ConfigError(f"{source}: augment: must be a mapping")
        _reject_unknown(augment, AugmentConfig, f"{source}: augment.")
        _reject_unknown(data, cls, f"{source}: ", skip={"model", "hparams", "augment"})
        if "hparams" in data:
            raise ConfigError(f"{source}: hparams: put model settings under 'model'")
        try:
            cfg = cls(model=name, hparams=hparams, augment=AugmentConfig(**augment), **data)
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        return cfg.validate()


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` (no dot) as a string; a recipe means the number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse YAML text the way recipes are read (`1e-3` is a float)."""
    return yaml.load(text, Loader=_Loader)


def _check(ok: Any, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def _int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _reject_unknown(
    data: dict, cls: type, prefix: str, skip: AbstractSet[str] = frozenset()
) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}
    known = (fields - {"hparams"}) if cls is TrainConfig else fields
    for key in data:
        if key not in fields - set(skip) and key not in skip:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")


def _check_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Unknown model names and hyper-parameters fail at load time, not after data loading."""
    import inspect

    from voxid.models import MODELS

    if name == "gmm":
        from voxid.models.gmm import GmmClassifier

        allowed = [p for p in inspect.signature(GmmClassifier).parameters if p != "self"]
    elif name in MODELS:
        params = inspect.signature(MODELS[name]).parameters
        allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    else:
        raise ConfigError(f"model: unknown model {name!r} (choose from gmm, {', '.join(MODELS)})")
    for key in hparams:
        if key not in allowed:
            raise ConfigError(f"model.{key}: not a setting of {name} ({', '.join(allowed)})")


def resolve_config_path(spec: str | Path) -> Path:
    """A recipe file: an existing path, or a bare model name for a packaged recipe."""
    path = Path(spec)
    if path.is_file():
        return path
    packaged = PACKAGED / f"{spec}.yaml"
    if os.sep not in str(spec) and path.suffix == "" and packaged.is_file():
        return packaged
    names = ", ".join(sorted(p.stem for p in PACKAGED.glob("*.yaml")))
    raise ConfigError(f"{spec}: no such config file or packaged recipe (recipes: {names})")


def load_config(spec: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a recipe (a YAML path or a packaged name like `crnn`) and apply overrides."""
    path = resolve_config_path(spec)
    try:
        data = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    cfg = TrainConfig.from_dict(data, source=str(path))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """A new config with `key=value` overrides applied (dotted keys reach nested sections)."""
    data = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{item}: overrides look like key=value (e.g. batch_size=16)")
        try:
            value = read_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            if part == "model" and i == 0 and not isinstance(node.get("model"), dict):
                node["model"] = {"name": node["model"]}
            if part == "features" and i == 0 and node.get("features") is None:
                node["features"] = {}
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{key}: '{'.'.join(parts[: i + 1])}' is not a section")
            node = node[part]
        node[parts[-1]] = value
    return TrainConfig.from_dict(data, source="overrides")


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write the resolved recipe as YAML, atomically."""
    from voxid.io import atomic_write

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text))
