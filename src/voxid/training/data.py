"""The data side of a training run: which speakers, which classes, which items (no Lightning).

A store's labels are its speakers; a run's classes are either the training speakers
(`identify`, and `authenticate` with `auth_scoring: speakers`) or `["outsider", "member"]`
(`authenticate` with the binary head). `TaskData` opens the splits,
checks the store against the model, and maps store labels to class indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from voxid.config import TrainConfig
from voxid.errors import ConfigError, DataError

AUTH_LABELS = ["outsider", "member"]


def resolve_features(cfg: TrainConfig) -> Any:
    """The model's `FeatureConfig`: its preset, updated by the recipe's `features` section."""
    from voxid.features import FeatureConfig
    from voxid.models import default_feature_config

    base = default_feature_config(cfg.model)
    if not cfg.features:
        return base
    kind = cfg.features.get("kind", base.kind)
    preset = base if kind == base.kind else getattr(FeatureConfig, str(kind), None)
    if preset is None or not (kind == base.kind or callable(preset)):
        raise ConfigError(f"features.kind: unknown feature kind {kind!r}")
    preset = preset if kind == base.kind else preset()
    try:
        return FeatureConfig.from_dict({**preset.to_dict(), **cfg.features})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"features: {exc}") from None


class MappedDataset(Dataset):
    """A store split whose labels are mapped to a run's class indices.

    Arguments:
        base: a `StoreDataset`.
        mapping: store label -> class index (-1: not part of this run).
        speaker_names: store label -> speaker name.
        allow_unknown: keep items whose class is -1 (outsiders never seen in training, in
            the test split of an authentication run by speakers).
    """

    def __init__(
        self,
        base: Any,
        mapping: np.ndarray,
        speaker_names: list[str],
        allow_unknown: bool = False,
    ):
        self.base = base
        self.store_labels = np.asarray(base.labels, dtype=np.int64)
        self.labels = mapping[self.store_labels]
        if not allow_unknown and (self.labels < 0).any():
            raise DataError("internal: an item of a speaker outside this run was selected")
        self.speakers = [speaker_names[i] for i in self.store_labels]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, _ = self.base[index]
        return x, int(self.labels[index])


@dataclass
class TaskData:
    """The splits of one run and the names that go with them.

    Attributes:
        labels: class names by index.
        train_speakers: every speaker whose items are trained on.
        waveform: the store holds waveforms (the model's frontend runs on each batch).
    """

    store: Path
    info: Any
    labels: list[str]
    train_speakers: list[str]
    train: MappedDataset
    val: MappedDataset
    test: MappedDataset | None
    waveform: bool
    heldout: MappedDataset | None = None
    targets: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def class_counts(self) -> np.ndarray:
        """Training items per class."""
        return np.bincount(self.train.labels, minlength=len(self.labels))

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency loss weights, mean 1 (a class without items gets 0)."""
        counts = self.class_counts.astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / len(counts), 0.0)
        return torch.tensor(weights, dtype=torch.float32)

    def loader(self, split: str, cfg: TrainConfig, *, shuffle: bool = False) -> DataLoader:
        """A DataLoader over `split` (`train` gets shuffling or balanced sampling)."""
        from voxid.data.loader import collate_pad

        dataset: Any = {"train": self.train, "val": self.val, "test": self.test,
                        "heldout": self.heldout}[split]  # fmt: skip
        if split == "train" and self.targets is not None:
            from voxid.training.distill import TargetDataset

            dataset = TargetDataset(dataset, *self.targets)
        sampler = None
        if split == "train" and cfg.balanced:
            per_class = 1.0 / np.maximum(self.class_counts, 1)
            weights = per_class[self.train.labels].tolist()  # the sampler makes them doubles
            generator = torch.Generator().manual_seed(cfg.seed)
            sampler = WeightedRandomSampler(weights, len(weights), True, generator=generator)
            shuffle = False
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_pad,
            persistent_workers=cfg.num_workers > 0,
            drop_last=False,
        )


def _names(info: Any) -> list[str]:
    speakers = info.speakers
    if isinstance(speakers, dict):
        return [speakers[i] for i in range(len(speakers))]
    return [str(s) for s in speakers]


def check_store(info: Any, feature_config: Any, store: Path) -> bool:
    """Check the store can feed a model; True when it holds waveforms.

    A waveform store must be at the model's sample rate; a feature store must hold exactly
    the model's features. Raises `DataError` naming the store otherwise.
    """
    stored = info.feature_config
    if stored.kind == "waveform":
        if int(stored.sample_rate) != int(feature_config.sample_rate):
            raise DataError(
                f"{store}: waveforms at {stored.sample_rate} Hz, the model's features need "
                f"{feature_config.sample_rate} Hz (prepare the store at that rate, or set "
                f"features.sample_rate={stored.sample_rate})"
            )
        return True
    info.check_compatible(feature_config)
    return False


def open_task(cfg: TrainConfig, store: str | Path, feature_config: Any) -> TaskData:
    """Open the store's splits for this run's mode, members and speakers."""
    from voxid.data.loader import StoreDataset
    from voxid.data.store import StoreInfo

    store = Path(store)
    if not store.is_file():
        raise DataError(f"{store}: no such store (make one with voxid prepare)")
    info = StoreInfo.open(store)
    waveform = check_store(info, feature_config, store)
    names = _names(info)
    splits = np.asarray(info.items["split"]).astype(str)
    store_labels = np.asarray(info.items["label"], dtype=np.int64)
    in_train = {names[i] for i in np.unique(store_labels[splits == cfg.train_split])}
    if not in_train:
        raise DataError(f"{store}: no items in split '{cfg.train_split}'")
    wanted = cfg.speakers if cfg.speakers is not None else sorted(in_train)
    for key, group in (("speakers", wanted), ("members", cfg.members)):
        for name in group:
            if name not in in_train:
                raise ConfigError(f"{key}: '{name}' has no '{cfg.train_split}' items in {store}")
    train_speakers = sorted(set(wanted) | set(cfg.members))
    index = {name: i for i, name in enumerate(names)}
    mapping = np.full(len(names), -1, dtype=np.int64)
    by_speaker = cfg.mode == "identify" or cfg.auth_scoring == "speakers"
    if by_speaker:
        labels = train_speakers
        for i, name in enumerate(labels):
            mapping[index[name]] = i
        test_speakers = train_speakers  # closed set: a test speaker must be a class
    if cfg.mode == "authenticate":
        if len(train_speakers) == len(cfg.members):
            raise ConfigError("members: every training speaker is a member; outsiders needed")
        # Outsiders never seen in training are the point of the test.
        test_speakers = names
        mapping_test = mapping.copy()
    if cfg.mode == "authenticate" and not by_speaker:
        labels = list(AUTH_LABELS)
        for name in train_speakers:
            mapping[index[name]] = int(name in cfg.members)
        mapping_test = np.array([int(n in cfg.members) for n in names], dtype=np.int64)

    def split(name: str, speakers: list[str], table: np.ndarray) -> MappedDataset | None:
        if not np.isin(splits, [name]).any():
            return None
        # Labels, not names: a name is no pattern. Validation and test stay un-augmented.
        base = StoreDataset(
            store, split=name, speakers=[index[s] for s in speakers], cache=cfg.cache,
            include_augmented=name == cfg.train_split,
        )  # fmt: skip
        unknown = name == cfg.test_split and cfg.mode == "authenticate"
        return MappedDataset(base, table, names, allow_unknown=unknown) if len(base) else None

    train = split(cfg.train_split, train_speakers, mapping)
    val = split(cfg.val_split, train_speakers, mapping)
    if train is None:
        raise DataError(f"{store}: no '{cfg.train_split}' items of the training speakers")
    if val is None:
        raise DataError(
            f"{store}: no '{cfg.val_split}' items of the training speakers; prepare the store "
            "with a validation split (it picks the best epoch and stops training early)"
        )
    test_map = mapping if cfg.mode == "identify" else mapping_test
    test = split(cfg.test_split, test_speakers, test_map)
    if cfg.mode == "authenticate" and len({s in cfg.members for s in val.speakers}) < 2:
        raise DataError(
            f"{store}: the '{cfg.val_split}' split needs members and outsiders to choose the "
            "authentication threshold"
        )
    heldout = None
    if cfg.monitor == "val_eer":
        heldout = _heldout(cfg, store, names, set(train_speakers), splits, store_labels)
    targets = None
    if cfg.distill_targets:
        from voxid.training.distill import load_targets

        targets = load_targets(cfg.distill_targets, info.fingerprint)
    return TaskData(
        store, info, labels, train_speakers, train, val, test, waveform, heldout, targets
    )


def _heldout(
    cfg: TrainConfig,
    store: Path,
    names: list[str],
    trained: set[str],
    splits: np.ndarray,
    store_labels: np.ndarray,
) -> MappedDataset:
    """The never-trained-on speakers whose verification EER picks epochs (labels: store's)."""
    from voxid.data.loader import StoreDataset

    chosen = np.unique(store_labels[splits == cfg.heldout_split])
    if chosen.size < 2:
        raise DataError(
            f"{store}: monitor val_eer needs at least two speakers in split "
            f"'{cfg.heldout_split}' (voxid prepare --heldout-speakers N)"
        )
    overlap = sorted({names[i] for i in chosen} & trained)
    if overlap:
        raise DataError(
            f"{store}: split '{cfg.heldout_split}' must hold speakers never trained on; "
            f"{overlap[0]} is also in '{cfg.train_split}'"
        )
    base = StoreDataset(store, split=cfg.heldout_split, cache=cfg.cache, include_augmented=False)
    identity = np.arange(len(names), dtype=np.int64)
    return MappedDataset(base, identity, names)
