"""Deterministic train/val/test splits that never cut a source file (or a group) in two.

Three ways to split, in order of precedence:

1. a `rule` on a manifest column (`"take:01,02,03=train;04=test"`): each clause maps values
   of the column to a split name (any string: `enroll`, `test`...); `*=name` catches every
   other value. Files the rule does not match (value not listed and no `*`, or the column
   missing) get no split and are left out of the store; `prepare` reports how many.
2. a `split` column in the manifest, honoured as given (for files that have one);
3. `ratios` over the remaining files: per speaker (`by="utterance"`, stratified, the default
   80/10/10) or over whole speakers (`by="speaker"`, speaker-disjoint).

The unit of assignment is the source file, or the manifest's `group` column when present
(for example a recording session), so chunks and sessions never straddle two splits.
`val_from_train` carves a validation split out of each speaker's training files for rules
that name none. Randomness is seeded per speaker from `seed` and the speaker's name, so a
split does not change when other speakers are added or removed.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from voxid.data.corpus import Corpus, CorpusItem, SpeakerSpec
from voxid.errors import ConfigError

__all__ = [
    "SPLIT_NAMES",
    "assign_splits",
    "hold_out_for_verification",
    "hold_out_speakers",
    "parse_rule",
    "val_from_train",
]

SPLIT_NAMES = ("train", "val", "test")


def _rng(seed: int, *keys: str) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join([str(seed), *keys]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _unit(it: CorpusItem) -> str:
    return it.extra.get("group") or str(it.path)


def parse_rule(rule: str) -> tuple[str, dict[str, str], str | None]:
    """Parse `"column:v1,v2=split;v3=split2[;*=split3]"` into (column, value->split, default).

    >>> parse_rule("take:01,02,03=train;04=test")
    ('take', {'01': 'train', '02': 'train', '03': 'train', '04': 'test'}, None)
    """
    column, sep, body = rule.partition(":")
    column = column.strip()
    if not sep or not column or not body.strip():
        raise ConfigError(f"split-rule: expected 'column:values=split;...', got {rule!r}")
    mapping: dict[str, str] = {}
    default = None
    for clause in filter(None, (c.strip() for c in body.split(";"))):
        values, eq, split = clause.rpartition("=")
        split = split.strip()
        if not eq or not split or not values.strip():
            raise ConfigError(f"split-rule: clause {clause!r} is not 'values=split'")
        for v in (v.strip() for v in values.split(",")):
            if v == "*":
                default = split
            elif v in mapping and mapping[v] != split:
                raise ConfigError(f"split-rule: value {v!r} is given two splits")
            elif v:
                mapping[v] = split
    return column, mapping, default


def _allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Split n units by cumulative rounding; train keeps at least one unit."""
    cum = np.round(np.cumsum(ratios) / sum(ratios) * n).astype(int)
    counts = np.diff(np.concatenate([[0], cum])).tolist()
    if n and counts[0] == 0:
        donor = int(np.argmax(counts))
        counts[donor] -= 1
        counts[0] += 1
    return counts


def _by_ratio(items: list[CorpusItem], ratios: Sequence[float], by: str, seed: int) -> dict:
    names = SPLIT_NAMES[: len(ratios)] if len(ratios) > 1 else ("train",)
    out: dict[str, str] = {}
    if by == "speaker":
        speakers = sorted({it.speaker for it in items})
        order = _rng(seed, "speakers").permutation(len(speakers))
        counts = _allocate(len(speakers), ratios)
        bounds = np.cumsum(counts)
        for rank, idx in enumerate(order):
            out[speakers[idx]] = names[int(np.searchsorted(bounds, rank, side="right"))]
        return {_unit(it): out[it.speaker] for it in items}
    units: dict[str, set[str]] = defaultdict(set)
    for it in items:
        units[it.speaker].add(_unit(it))
    for speaker, uset in units.items():
        us = sorted(uset)
        order = _rng(seed, speaker).permutation(len(us))
        bounds = np.cumsum(_allocate(len(us), ratios))
        for rank, idx in enumerate(order):
            out[us[idx]] = names[int(np.searchsorted(bounds, rank, side="right"))]
    return out


def assign_splits(
    corpus: Corpus,
    *,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    by: str = "utterance",
    seed: int = 0,
    rule: str | None = None,
) -> Corpus:
    """Return a copy of `corpus` with a split on every item (see the module docstring).

    Arguments
    ---------
    ratios: fractions for (train, val[, test]); they are normalised to sum to 1.
    by: "utterance" (per-speaker stratified) or "speaker" (speaker-disjoint).
    seed: makes the assignment reproducible.
    rule: a column rule; items it does not match keep `split=None`.

    >>> from pathlib import Path
    >>> c = Corpus([CorpusItem(Path(f"/a/{i}.wav"), "ann") for i in range(10)])
    >>> sorted(it.split for it in assign_splits(c, seed=1)).count("train")
    8
    """
    if by not in ("utterance", "speaker"):
        raise ConfigError(f"by: must be 'utterance' or 'speaker', got {by!r}")
    if not 1 <= len(ratios) <= 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ConfigError(f"ratios: need 1 to 3 non-negative fractions, got {list(ratios)}")
    if rule:
        column, mapping, default = parse_rule(rule)
        return corpus.with_items(
            CorpusItem(
                it.path,
                it.speaker,
                mapping.get(it.extra.get(column, ""), default) if column in it.extra else default,
                it.extra,
            )
            for it in corpus.items
        )
    todo = [it for it in corpus.items if it.split is None]
    chosen = _by_ratio(todo, ratios, by, seed) if todo else {}
    return corpus.with_items(
        it if it.split is not None else CorpusItem(it.path, it.speaker, chosen[_unit(it)], it.extra)
        for it in corpus.items
    )


def val_from_train(corpus: Corpus, fraction: float = 0.1, *, seed: int = 0) -> Corpus:
    """Move `fraction` of each speaker's training units to `val` (at least one when the
    speaker has two or more), deterministically.

    >>> from pathlib import Path
    >>> c = Corpus([CorpusItem(Path(f"/a/{i}.wav"), "ann", "train") for i in range(20)])
    >>> [it.split for it in val_from_train(c, 0.1)].count("val")
    2
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"val-from-train: must be between 0 and 1, got {fraction}")
    units: dict[str, set[str]] = defaultdict(set)
    for it in corpus.items:
        if it.split == "train":
            units[it.speaker].add(_unit(it))
    to_val: set[str] = set()
    for speaker, uset in units.items():
        us = sorted(uset)
        n_val = min(max(round(fraction * len(us)), 1), len(us) - 1)
        picks = _rng(seed, "val", speaker).permutation(len(us))[:n_val]
        to_val.update(us[i] for i in picks)
    return corpus.with_items(
        CorpusItem(it.path, it.speaker, "val", it.extra)
        if it.split == "train" and _unit(it) in to_val
        else it
        for it in corpus.items
    )


def hold_out_speakers(
    corpus: Corpus, spec: str | Sequence[str], keep: Sequence[str] = ("test",)
) -> Corpus:
    """Drop the files of the speakers in `spec` except those in the `keep` splits: speakers
    seen only at test time (P-B's unseen outsiders).

    >>> from pathlib import Path
    >>> c = Corpus([CorpusItem(Path("/a/1.wav"), "07", "train"),
    ...             CorpusItem(Path("/a/2.wav"), "07", "test")])
    >>> [it.split for it in hold_out_speakers(c, "07")]
    ['test']
    """
    sp = SpeakerSpec.parse(spec)
    return corpus.with_items(
        it for it in corpus.items if it.split in keep or not sp.matches(it.speaker)
    )


def hold_out_for_verification(
    corpus: Corpus, count: int, *, seed: int = 0, split: str = "heldout"
) -> Corpus:
    """Move every file of `count` speakers, drawn at random (seeded), into `split`: voices
    the model never trains on, whose verification EER picks the best epoch
    (`monitor: val_eer`).

    >>> from pathlib import Path
    >>> c = Corpus([CorpusItem(Path(f"/a/{s}{i}.wav"), s, "train")
    ...             for s in "abcd" for i in range(2)])
    >>> held = hold_out_for_verification(c, 1, seed=3)
    >>> sorted({it.speaker for it in held.items if it.split == "heldout"})
    ['d']
    """
    speakers = sorted({it.speaker for it in corpus.items})
    if not 0 <= count < len(speakers):
        raise ConfigError(
            f"heldout_speakers: {count} of {len(speakers)} speakers would leave none to train on"
        )
    order = _rng(seed, "heldout").permutation(len(speakers))
    chosen = {speakers[i] for i in order[:count]}
    return corpus.with_items(
        CorpusItem(it.path, it.speaker, split, it.extra) if it.speaker in chosen else it
        for it in corpus.items
    )
