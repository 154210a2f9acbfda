"""`prepare` and the HDF5 store: content, metadata, determinism, bad input, atomicity."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from conftest import tone
from voxid.data import assign_splits, load_corpus
from voxid.data.prepare import PrepareConfig, prepare
from voxid.data.store import StoreInfo
from voxid.errors import ConfigError, DataError
from voxid.features import FeatureConfig, frames_for
from voxid.vad import ChunkConfig, VadConfig


@pytest.fixture(scope="module")
def split_corpus(speech_corpus):
    return assign_splits(load_corpus(speech_corpus), seed=0)


@pytest.fixture(scope="module")
def store(split_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "speech.h5"
    report = prepare(split_corpus, out, PrepareConfig(), workers=2)
    return out, report


def test_store_content_and_metadata(store, split_corpus):
    path, report = store
    info = StoreInfo.open(path)
    assert info.speakers == ["alice", "bruno", "chloe", "david"]
    assert report.files == report.files_used == 32 and not report.skipped
    assert len(info) == report.items > 32  # ~3 s files give several 1 s chunks
    assert info.splits == report.items_per_split and set(info.splits) == {"train", "val", "test"}
    t = info.items
    # every chunk of one source file is in one split
    for src in np.unique(t["source"]):
        assert len(np.unique(t["split"][t["source"] == src])) == 1
    # labels follow each file's speaker folder
    names = np.array(info.speakers)[t["label"]]
    assert all(Path(s).parent.name == n for s, n in zip(t["source"], names, strict=True))
    assert info.audio_config["sample_rate"] == 16000 and info.audio_config["vad"]["enabled"]
    cfg = FeatureConfig.logmel()
    assert info.feature_config == cfg
    assert (t["length"] == frames_for(cfg, 16000)).all()
    assert np.all(t["offset"][1:] == t["offset"][:-1] + t["length"][:-1])
    with h5py.File(path) as f:
        assert f["data"].shape == (int(t["length"].sum()), 64)
        assert f["data"].compression == "lzf" and f["data"].chunks is not None
        x = f["data"][: t["length"][0]]
    assert np.isfinite(x).all() and x.std() > 1.0  # real log-mel, not zeros
    assert report.seconds > 32 * 1.5 and report.hours == pytest.approx(report.seconds / 3600)


def test_check_compatible(store):
    info = StoreInfo.open(store[0])
    info.check_compatible(FeatureConfig.logmel())
    info.check_compatible(FeatureConfig.logmel().to_dict())
    with pytest.raises(DataError, match="n_mels=64"):
        info.check_compatible(FeatureConfig.logmel(n_mels=80))
    with pytest.raises(DataError, match="kind"):
        info.check_compatible(FeatureConfig.fbank())


def test_same_inputs_same_store_any_worker_count(store, split_corpus, tmp_path):
    again = prepare(split_corpus, tmp_path / "again.h5", PrepareConfig(), workers=1)
    a, b = StoreInfo.open(store[0]), StoreInfo.open(again.out_path)
    assert a.fingerprint == b.fingerprint == again.fingerprint
    for k in a.items:
        np.testing.assert_array_equal(a.items[k], b.items[k])
    with h5py.File(store[0]) as fa, h5py.File(again.out_path) as fb:
        np.testing.assert_array_equal(fa["data"][()], fb["data"][()])
    other = prepare(
        split_corpus,
        tmp_path / "other.h5",
        PrepareConfig(vad=VadConfig(threshold_db=-30.0)),
        workers=1,
    )
    assert other.fingerprint != a.fingerprint


def test_bad_files_are_skipped_and_reported(tmp_path, write_wav):
    (tmp_path / "ann").mkdir()
    (tmp_path / "bob").mkdir()
    for i in range(3):
        write_wav(f"ann/{i}.wav", tone(1.5, seed=i))
        write_wav(f"bob/{i}.wav", tone(1.5, freq=140.0, seed=i))
    write_wav("bob/silent.wav", np.zeros(16000, dtype=np.float32))
    (tmp_path / "bob" / "empty.wav").write_bytes(b"")
    (tmp_path / "ann" / "junk.flac").write_bytes(b"this is not audio at all" * 10)
    write_wav("ann/blip.wav", tone(0.05))
    corpus = assign_splits(load_corpus(tmp_path), ratios=(1.0,))
    # tones stand in for speech: the energy VAD takes them, Silero rightly would not
    report = prepare(corpus, tmp_path / "s.h5", PrepareConfig(vad=VadConfig(method="energy")),
                     workers=2)  # fmt: skip
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert set(reasons) == {"silent.wav", "empty.wav", "junk.flac", "blip.wav"}
    assert "zero" in reasons["silent.wav"] and "empty" in reasons["empty.wav"]
    assert "speech" in reasons["blip.wav"]
    info = StoreInfo.open(tmp_path / "s.h5")
    assert report.files_used == 6 and len(set(info.items["source"])) == 6
    assert set(info.splits) == {"train"} and len(info.report["skipped"]) == 4


def test_variable_length_whole_files_and_waveform(split_corpus, tmp_path):
    cfg = PrepareConfig(feature=FeatureConfig.fbank(), chunk=None)
    rep = prepare(split_corpus, tmp_path / "whole.h5", cfg, workers=1)
    info = StoreInfo.open(rep.out_path)
    assert len(info) == 32 and len(np.unique(info.items["length"])) > 5
    wave = PrepareConfig(
        feature=FeatureConfig.waveform(), chunk=ChunkConfig(seconds=1.5, tail="keep")
    )
    rep = prepare(split_corpus, tmp_path / "wave.h5", wave, workers=1)
    info = StoreInfo.open(rep.out_path)
    assert info.items["length"].max() == 24000 and info.items["length"].min() < 24000
    with h5py.File(rep.out_path) as f:
        assert f["data"].ndim == 1


def test_no_split_and_no_audio_are_errors(speech_corpus, tmp_path, write_wav):
    with pytest.raises(DataError, match="no file has a split"):
        prepare(load_corpus(speech_corpus), tmp_path / "x.h5", PrepareConfig())
    (tmp_path / "ann").mkdir()
    write_wav("ann/silent.wav", np.zeros(8000, dtype=np.float32))
    with pytest.raises(DataError, match="no usable audio"):
        prepare(
            assign_splits(load_corpus(tmp_path), ratios=(1.0,)), tmp_path / "y.h5", PrepareConfig()
        )
    assert not (tmp_path / "y.h5").exists() and not list(tmp_path.glob(".*partial"))


def _many_files(root: Path, n: int) -> None:
    waves = [tone(1.0, freq=120.0 + 10 * k, seed=k) for k in range(4)]
    for i in range(n):
        spk = root / f"spk{i % 4}"
        spk.mkdir(parents=True, exist_ok=True)
        sf.write(spk / f"{i:04d}.wav", waves[i % 4], 16000)


@pytest.fixture(scope="module")
def big_and_small(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    _many_files(root / "big", 300)
    _many_files(root / "small", 8)
    return root / "big", root / "small"


def _prepare_cmd(data: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "voxid",
        "prepare",
        str(data),
        "-o",
        str(out),
        "--workers",
        "1",
        "--split",
        "1.0",
        "--json",
    ]


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_interrupted_prepare_leaves_previous_store_intact(tmp_path, big_and_small, sig):
    big, small = big_and_small
    out = tmp_path / "store.h5"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    before = prepare(assign_splits(load_corpus(small), ratios=(1.0,)), out).fingerprint
    proc = subprocess.Popen(
        _prepare_cmd(big, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".store.h5.*.partial")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(tmp_path.glob(".store.h5.*.partial")), "prepare never started writing"
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert StoreInfo.open(out).fingerprint == before  # old store untouched
    assert not list(tmp_path.glob(".store.h5.*"))  # no half-written leftovers


def test_shared_corpora_subsets(shared_data, tmp_path):
    """8 kHz fsdd and voxforge are resampled; asc30's `take` column is kept per item."""
    manifest = tmp_path / "m.csv"
    rows = [("path", "speaker", "take")]
    for corpus, spk, name in [
        ("fsdd", "george", "0_0.wav"),
        ("fsdd", "theo", "1_3.wav"),
        ("asc30", "00000001", "backward_04.flac"),
        ("voxforge", "Ara", None),
    ]:
        folder = shared_data / corpus / spk
        path = folder / name if name else sorted(folder.iterdir())[0]
        rows.append((str(path), spk, name[-7:-5] if corpus == "asc30" else ""))
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    corpus = assign_splits(load_corpus(manifest), ratios=(1.0,))
    report = prepare(corpus, tmp_path / "mix.h5", PrepareConfig(), workers=1)
    assert report.files_used == 4, report.skipped
    info = StoreInfo.open(tmp_path / "mix.h5")
    assert info.audio_config["sample_rate"] == 16000
    asc = np.char.endswith(info.items["source"], ".flac")
    assert set(info.items["take"][asc]) == {"04"}


def _imbalanced(root: Path) -> None:
    rng = np.random.default_rng(0)
    for spk, n, f0 in (("ann", 6, 180.0), ("bob", 2, 110.0), ("cid", 3, 140.0)):
        (root / spk).mkdir(parents=True)
        for i in range(n):
            sf.write(root / spk / f"{i}.wav", tone(1.0, freq=f0, seed=i), 16000)
    (root.parent / "noise").mkdir()
    sf.write(root.parent / "noise" / "hum.wav", rng.standard_normal(16000) * 0.1, 16000)


def test_augment_train_only_and_oversample(tmp_path):
    _imbalanced(tmp_path / "data")
    corpus = assign_splits(load_corpus(tmp_path / "data"), ratios=(0.67, 0.33), seed=0)
    cfg = PrepareConfig(
        augment=("speed_1.1", "noise_real"),
        noise_dir=str(tmp_path / "noise"),
        oversample=True,
        seed=5,
    )
    rep = prepare(corpus, tmp_path / "aug.h5", cfg, workers=2)
    t = StoreInfo.open(rep.out_path).items
    assert set(t["augment"][t["split"] == "val"]) == {""}
    train = t["split"] == "train"
    assert set(t["augment"][train]) == {"", "speed_1.1", "noise_real"}
    assert rep.augmented == int(((t["augment"] != "") & (t["copy"] == 0)).sum()) > 0
    counts = np.bincount(t["label"][train])
    assert (counts == counts.max()).all() and rep.oversampled > 0  # balanced by copies
    copies = t["copy"] > 0
    assert set(t["augment"][copies]) <= {"speed_1.1", "noise_real"}
    originals = set(zip(t["offset"][~copies], t["length"][~copies], strict=True))
    assert (
        set(zip(t["offset"][copies], t["length"][copies], strict=True)) <= originals
    )  # no new data
    again = prepare(corpus, tmp_path / "again.h5", cfg, workers=1)
    assert again.fingerprint == rep.fingerprint
    with h5py.File(rep.out_path) as a, h5py.File(again.out_path) as b:
        np.testing.assert_array_equal(a["data"][()], b["data"][()])  # seeded per file


def test_members_oversampling_balances_members_against_others(tmp_path):
    _imbalanced(tmp_path / "data")
    corpus = assign_splits(load_corpus(tmp_path / "data"), ratios=(1.0,))
    cfg = PrepareConfig(augment=("noise_low",), oversample=True, members="bob")
    info = StoreInfo.open(prepare(corpus, tmp_path / "m.h5", cfg, workers=1).out_path)
    assert info.members == ["bob"]
    is_member = info.items["label"] == info.speakers.index("bob")
    assert is_member.sum() == (~is_member).sum()
    with pytest.raises(ConfigError, match="unknown augmentation 'echo'"):
        PrepareConfig(augment=("echo",))
    with pytest.raises(ConfigError, match="noise-dir"):
        PrepareConfig(augment=("noise_real",))
    with pytest.raises(ConfigError, match="tail"):
        PrepareConfig(chunk=ChunkConfig(tail="wrap"))
    with pytest.raises(ConfigError, match="seconds"):
        PrepareConfig(chunk=ChunkConfig(seconds=0.0))


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"definitely not HDF5")
    with pytest.raises(DataError, match="not a readable HDF5 store"):
        StoreInfo.open(junk)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="not a voxid store"):
        StoreInfo.open(tmp_path / "plain.h5")
    with pytest.raises(DataError, match="store not found"):
        StoreInfo.open(tmp_path / "missing.h5")


def _tiny_corpus(root: Path) -> Path:
    for spk, freq in (("ann", 220.0), ("bob", 140.0)):
        (root / spk).mkdir(parents=True)
        for i in range(2):
            sf.write(root / spk / f"{i}.wav", tone(1.0, freq=freq, seed=i), 16000)
    return root


def _sparse_wav(path: Path, head: np.ndarray, sr: int, channels: int, size: int) -> None:
    """A 16-bit WAV of `size` bytes: `head` (int16 frames), then zeros that the file
    system stores as a hole, so a file of hundreds of MB costs no disk."""
    data = size - 44
    with open(path, "wb") as f:
        f.write(b"RIFF" + (size - 8).to_bytes(4, "little") + b"WAVEfmt ")
        f.write((16).to_bytes(4, "little") + (1).to_bytes(2, "little"))
        f.write(channels.to_bytes(2, "little") + sr.to_bytes(4, "little"))
        f.write((sr * channels * 2).to_bytes(4, "little") + (channels * 2).to_bytes(2, "little"))
        f.write((16).to_bytes(2, "little") + b"data" + data.to_bytes(4, "little"))
        f.write(head.astype("<i2").tobytes())
        f.truncate(size)


def test_prepare_streams_big_files(tmp_path):
    """A 130 s 192 kHz stereo WAV (100 MB) and a 600 MB one far over the limit: prepare
    never holds either file, nor its decoded samples, in memory."""
    from conftest import PEAK_RSS_MB

    small = _tiny_corpus(tmp_path / "small")
    big = shutil.copytree(small, tmp_path / "big")
    voice = (tone(2.0, 192000) * 20000).astype(np.int16)
    _sparse_wav(big / "ann" / "lecture.wav", np.stack([voice, voice], 1), 192000, 2, 100_000_000)
    _sparse_wav(big / "bob" / "huge.wav", voice[:16000], 16000, 1, 600_000_000)
    code = f"""
import json
{PEAK_RSS_MB}
from voxid.data import assign_splits, load_corpus
from voxid.data.prepare import PrepareConfig, prepare
from voxid.vad import VadConfig

def run(root, out):  # tones stand in for speech: the energy VAD takes them
    cfg = PrepareConfig(vad=VadConfig(method="energy"))
    return prepare(assign_splits(load_corpus(root), ratios=(1.0,)), out, cfg, workers=1)

run({str(small)!r}, {str(tmp_path / "small.h5")!r})  # imports torch, builds the frontend
before = peak_rss_mb()
report = run({str(big)!r}, {str(tmp_path / "big.h5")!r})
print(json.dumps([report.files_used, [r for _, r in report.skipped], peak_rss_mb() - before]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    used, skipped, grown_mb = json.loads(out.stdout.splitlines()[-1])
    assert used == 5, out.stdout
    assert skipped == ["18750.0 s is longer than the 600 s limit"]
    # Reading either file whole costs its size; its 16 kHz mono output is 8 MB and the VAD
    # over 130 s about 70 MB.
    assert grown_mb < 150, f"peak RSS grew by {grown_mb} MB"
    info = StoreInfo.open(tmp_path / "big.h5")
    lecture = [s.endswith("lecture.wav") for s in info.items["source"]]
    assert sum(lecture) >= 2  # the 2 s of voice, in 1 s chunks
    with pytest.raises(
        ConfigError, match="max_seconds: must be a positive number of seconds or None"
    ):
        PrepareConfig(max_seconds=0)


def test_prepare_refuses_to_replace_what_is_not_a_store(tmp_path):
    """`-o` pointing at an input recording (or any other file) must not destroy it."""
    corpus = assign_splits(load_corpus(_tiny_corpus(tmp_path / "data")), ratios=(1.0,))
    wav = tmp_path / "data" / "ann" / "0.wav"
    audio = wav.read_bytes()
    with pytest.raises(DataError, match=r"0\.wav: exists and is not a voxid store.*force"):
        prepare(corpus, wav, workers=1)
    assert wav.read_bytes() == audio
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match=r"plain\.h5: exists and is not a voxid store"):
        prepare(corpus, tmp_path / "plain.h5", workers=1)
    assert list(h5py.File(tmp_path / "plain.h5", "r")) == ["x"]
    os.mkfifo(tmp_path / "fifo.h5")  # must be refused without being opened (that would hang)
    with pytest.raises(DataError, match=r"fifo\.h5: exists and is not a voxid store"):
        prepare(corpus, tmp_path / "fifo.h5", workers=1)
    assert not list(tmp_path.glob(".*partial"))
    # A voxid store is replaced as before, and force replaces anything.
    first = prepare(corpus, tmp_path / "s.h5", workers=1)
    again = prepare(corpus, tmp_path / "s.h5", PrepareConfig(seed=1), workers=1)
    assert StoreInfo.open(tmp_path / "s.h5").fingerprint == again.fingerprint != first.fingerprint
    prepare(corpus, tmp_path / "plain.h5", workers=1, force=True)
    assert len(StoreInfo.open(tmp_path / "plain.h5")) > 0


def test_prepare_removes_partials_of_dead_runs_only(tmp_path):
    """A `kill -9` of prepare leaves `.<name>.<pid>.partial`; the next prepare into that
    folder removes those whose process is gone, and leaves running ones alone."""
    corpus = assign_splits(load_corpus(_tiny_corpus(tmp_path / "data")), ratios=(1.0,))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [
            tmp_path / f".store.h5.{dead.pid}.partial",
            tmp_path / f".old.h5.{dead.pid}.partial",
        ]
        running = tmp_path / f".store.h5.{alive.pid}.partial"
        unrelated = [tmp_path / ".store.h5.partial", tmp_path / f"store.h5.{dead.pid}.partial"]
        for path in (*stale, running, *unrelated):
            path.write_bytes(b"half a store")
        prepare(corpus, tmp_path / "store.h5", workers=1)
        assert not any(p.exists() for p in stale)
        assert running.exists() and all(p.exists() for p in unrelated)
    finally:
        alive.kill()
        alive.wait()
    assert len(StoreInfo.open(tmp_path / "store.h5")) > 0
