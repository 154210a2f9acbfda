"""Corpus discovery, manifests, speaker filters and splits."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxid.data import (
    Corpus,
    CorpusItem,
    SpeakerSpec,
    assign_splits,
    combine,
    hold_out_speakers,
    load_corpus,
    val_from_train,
)
from voxid.data.corpus import read_manifest, scan_folder
from voxid.data.splits import parse_rule
from voxid.errors import ConfigError, DataError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(160, dtype=np.float32) + 0.1, 16000)
    return path


def test_scan_folder_nested_speakers_and_skips(tmp_path):
    _touch(tmp_path / "id001" / "vidA" / "00001.wav")
    _touch(tmp_path / "id001" / "vidB" / "00002.flac")
    _touch(tmp_path / "id002" / "x.wav")
    _touch(tmp_path / "loose.wav")  # not in a speaker folder
    _touch(tmp_path / ".hidden" / "y.wav")
    (tmp_path / "id002" / "notes.txt").write_text("not audio")
    corpus = scan_folder(tmp_path)
    assert corpus.speakers == ["id001", "id002"]
    assert len(corpus) == 3
    assert all(it.path.is_absolute() for it in corpus)
    assert [Path(p).name for p, _ in corpus.skipped] == ["loose.wav"]


def test_scan_folder_rejects_symlink_outside(tmp_path):
    outside = _touch(tmp_path / "elsewhere" / "secret.wav")
    root = tmp_path / "corpus"
    _touch(root / "ann" / "a.wav")
    (root / "ann" / "link.wav").symlink_to(outside)
    corpus = scan_folder(root)
    assert len(corpus) == 1
    assert "outside" in corpus.skipped[0][1]


def test_scan_folder_reports_symlinked_folders_it_does_not_follow(tmp_path):
    _touch(tmp_path / "elsewhere" / "bob" / "b.wav")
    root = tmp_path / "corpus"
    _touch(root / "ann" / "a.wav")
    (root / "bob").symlink_to(tmp_path / "elsewhere" / "bob")
    (root / "ann" / "loop").symlink_to(root)
    corpus = scan_folder(root)
    assert corpus.speakers == ["ann"]
    assert sorted(Path(p).name for p, why in corpus.skipped if "not followed" in why) == [
        "bob",
        "loop",
    ]
    only_links = tmp_path / "links"
    only_links.mkdir()
    (only_links / "bob").symlink_to(tmp_path / "elsewhere" / "bob")
    with pytest.raises(DataError, match="1 symbolic links to folders not followed"):
        scan_folder(only_links)


def test_fifos_and_other_special_files_are_skipped_not_read(tmp_path):
    """A FIFO named like audio would block `prepare` for ever; it is reported instead."""
    import os
    import socket

    root = tmp_path / "corpus"
    _touch(root / "ann" / "a.wav")
    _touch(root / "bob" / "b.wav")
    os.mkfifo(root / "ann" / "pipe.wav")
    (root / "bob" / "to_pipe.flac").symlink_to(root / "ann" / "pipe.wav")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "bob" / "sock.wav"))
        corpus = scan_folder(root)
    assert [it.path.name for it in corpus] == ["a.wav", "b.wav"]
    reasons = {Path(p).name: why for p, why in corpus.skipped}
    assert reasons == {
        "pipe.wav": "not a regular file (a FIFO)",
        "to_pipe.flac": "not a regular file (a FIFO)",
        "sock.wav": "not a regular file (a socket)",
    }
    with (root / "manifest.csv").open("w") as fh:
        fh.write("path,speaker\nann/a.wav,ann\nann/pipe.wav,ann\n")
    corpus = read_manifest(root / "manifest.csv")
    assert [it.path.name for it in corpus] == ["a.wav"]
    assert [why for _, why in corpus.skipped] == ["not a regular file (a FIFO)"]


def test_prepare_with_a_fifo_in_the_corpus_finishes(tmp_path):
    import os
    import subprocess
    import sys

    root = tmp_path / "corpus"
    for spk in ("ann", "bob"):
        for i in range(2):
            path = root / spk / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.3 * np.sin(np.arange(16000) * (0.05 + i / 100)), 16000)
    os.mkfifo(root / "ann" / "pipe.wav")
    cmd = [sys.executable, "-m", "voxid", "prepare", str(root), "-o", str(tmp_path / "s.h5")]
    proc = subprocess.run(
        [*cmd, "--split", "1.0", "--workers", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=60,  # before the fix it never ended
    )
    assert proc.returncode == 0, proc.stderr
    assert "pipe.wav" in proc.stdout and "not a regular file (a FIFO)" in proc.stdout


def test_manifest_columns_paths_and_hostile_rows(tmp_path):
    _touch(tmp_path / "data" / "ann" / "1.wav")
    _touch(tmp_path / "data" / "bob" / "2.wav")
    _touch(tmp_path / "secret.wav")
    rows = [
        ("path", "speaker", "split", "gender"),
        ("ann/1.wav", "ann", "test", "f"),
        ("bob/2.wav", " bob ", "", "m"),
        ("../secret.wav", "eve", "", "f"),
        ("", "ann", "", "f"),
        ("ann/1.wav", "bad\x07name", "", "f"),
    ]
    with (tmp_path / "data" / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    corpus = load_corpus(tmp_path / "data")  # a folder with manifest.csv uses it
    assert [(it.speaker, it.split, it.extra) for it in corpus] == [
        ("ann", "test", {"gender": "f"}),
        ("bob", None, {"gender": "m"}),
    ]
    reasons = " | ".join(r for _, r in corpus.skipped)
    assert "leaves the manifest's folder" in reasons
    assert "empty path" in reasons and "control characters" in reasons


def test_manifest_errors(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file,who\na.wav,ann\n")
    with pytest.raises(DataError, match="'path' and 'speaker'"):
        read_manifest(bad)
    with pytest.raises(DataError, match="no such file"):
        load_corpus(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        load_corpus(tmp_path / "empty")


def test_speaker_spec_ranges_and_prefixes():
    spec = SpeakerSpec.parse(["asc30/00000021-00000030", "alice"])
    assert spec.matches("asc30/00000025") and spec.matches("alice")
    assert not spec.matches("librispeech-100/00000025")  # prefixed to another corpus
    assert not spec.matches("00000031") and not spec.matches("26")
    with pytest.raises(DataError, match="backwards"):
        SpeakerSpec.parse("30-21")
    with pytest.raises(DataError):
        SpeakerSpec.parse(" , ")


def test_combine_prefixes_and_filters():
    a = Corpus([CorpusItem(Path(f"/a/{i}.wav"), f"{i:02d}") for i in range(1, 5)], name="a")
    b = Corpus([CorpusItem(Path(f"/b/{i}.wav"), f"{i:02d}") for i in range(1, 3)], name="b")
    both = combine([a, b])
    assert both.speakers == ["a/01", "a/02", "a/03", "a/04", "b/01", "b/02"]
    assert both.filter_speakers(exclude="a/02-04").speakers == ["a/01", "b/01", "b/02"]
    assert both.filter_speakers("02").speakers == ["a/02", "b/02"]
    with pytest.raises(DataError, match="share the folder name"):
        combine([a, a])


def _corpus(n_speakers=3, n_files=20, **extra) -> Corpus:
    return Corpus(
        [
            CorpusItem(Path(f"/c/s{s}/{i}.wav"), f"s{s}", None, {k: v(i) for k, v in extra.items()})
            for s in range(n_speakers)
            for i in range(n_files)
        ]
    )


def test_utterance_splits_stratified_and_deterministic():
    c = _corpus()
    one = assign_splits(c, seed=3)
    assert [it.split for it in one] == [it.split for it in assign_splits(c, seed=3)]
    assert [it.split for it in one] != [it.split for it in assign_splits(c, seed=4)]
    for s in c.speakers:
        counts = Counter(it.split for it in one if it.speaker == s)
        assert counts == {"train": 16, "val": 2, "test": 2}
    # adding a speaker leaves the others' splits unchanged
    more = assign_splits(_corpus(n_speakers=4), seed=3)
    assert [it.split for it in more][:60] == [it.split for it in one]


def test_groups_never_straddle_splits_and_manifest_split_honoured():
    c = _corpus(n_files=40, group=lambda i: f"session{i // 4}")
    items = list(c)
    items[0] = CorpusItem(items[0].path, items[0].speaker, "test", items[0].extra)
    out = assign_splits(c.with_items(items), ratios=(0.9, 0.1), seed=0)
    assert out.items[0].split == "test"
    per_group: dict[tuple, set] = {}
    for it in out.items[1:]:
        per_group.setdefault((it.speaker, it.extra["group"]), set()).add(it.split)
    assert all(len(v) == 1 for v in per_group.values())
    assert {it.split for it in out} == {"train", "val", "test"}


def test_speaker_disjoint_split():
    out = assign_splits(_corpus(n_speakers=10, n_files=3), by="speaker", seed=1)
    per_speaker = {}
    for it in out:
        per_speaker.setdefault(it.speaker, set()).add(it.split)
    assert all(len(v) == 1 for v in per_speaker.values())
    assert Counter(next(iter(v)) for v in per_speaker.values()) == {"train": 8, "val": 1, "test": 1}


def test_rule_val_from_train_and_holdout():
    c = _corpus(n_files=8, take=lambda i: f"{i % 4 + 1:02d}")
    ruled = assign_splits(c, rule="take:01,02=train;03=enroll")
    assert Counter(it.split for it in ruled) == {"train": 12, "enroll": 6, None: 6}
    assert Counter(it.split for it in assign_splits(c, rule="take:04=test;*=train")) == {
        "train": 18,
        "test": 6,
    }
    with_val = val_from_train(ruled, 0.25, seed=0)
    assert Counter(it.split for it in with_val if it.speaker == "s0") == {
        "train": 3,
        "val": 1,
        "enroll": 2,
        None: 2,
    }
    held = hold_out_speakers(with_val, "s1", keep=("enroll",))
    assert {it.split for it in held if it.speaker == "s1"} == {"enroll"}
    with pytest.raises(ConfigError):
        parse_rule("take=train")
    with pytest.raises(ConfigError, match="two splits"):
        parse_rule("take:01=train;01=test")


def test_asc30_protocol_a_counts(shared_data):
    """P-A from the manifest table alone: takes 01-03 train, 04 test (1,200 clips)."""
    corpus = assign_splits(load_corpus(shared_data / "asc30"), rule="take:01,02,03=train;04=test")
    corpus = val_from_train(corpus, 0.1, seed=0)
    counts = Counter(it.split for it in corpus)
    assert len(corpus.speakers) == 30 and len(corpus) == 4800
    assert counts["test"] == 1200
    assert counts["train"] + counts["val"] == 3600
    assert counts["val"] == 30 * 12  # 10% of each speaker's 120 training clips
    pb = hold_out_speakers(corpus, "00000021-00000030")
    assert Counter(it.split for it in pb if it.speaker >= "00000021") == {"test": 400}
