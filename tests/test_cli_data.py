"""The data commands through the real typer app."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from voxid.cli import app
from voxid.data.store import StoreInfo
from voxid.errors import ConfigError, DataError

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def test_demo_corpus_and_prepare_two_corpora(speech_corpus, tmp_path):
    _run("demo-corpus", tmp_path / "demo", "--speakers", "2", "--sentences", "3")
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["alice", "bruno"]
    other = tmp_path / "other"
    shutil.copytree(speech_corpus, other)
    (other / "bruno" / "junk.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    out = tmp_path / "both.h5"
    res = _run(
        "prepare",
        tmp_path / "demo",
        other,
        "-o",
        out,
        "--exclude-speakers",
        "other/chloe,other/david",
        "--split",
        "90,10",
        "--workers",
        "1",
        "--json",
    )
    report = json.loads(res.stdout)
    assert report["files"] == 6 + 16 + 1 and report["files_used"] == 22
    assert [s["path"].endswith("junk.wav") for s in report["skipped"]] == [True]
    info = StoreInfo.open(out)
    assert info.speakers == ["demo/alice", "demo/bruno", "other/alice", "other/bruno"]
    assert set(info.splits) == {"train", "val"}
    text = _run(
        "prepare",
        other,
        "-o",
        tmp_path / "t.h5",
        "--features",
        "mfcc",
        "--no-vad",
        "--chunk",
        "2.0",
        "--workers",
        "1",
    )
    # 8 files per speaker under the default 80/10/10: one line on stderr before training
    warned = [ln for ln in text.stderr.splitlines() if ln.startswith("voxid: warning: ")]
    assert len(warned) == 1 and "--split 0.6,0.2,0.2" in warned[0], text.stderr
    text = text.stdout
    assert "skipped" in text and "junk.wav" in text
    info = StoreInfo.open(tmp_path / "t.h5")
    assert info.feature_config.kind == "mfcc" and info.audio_config["chunk"]["seconds"] == 2.0
    assert info.audio_config["vad"]["enabled"] is False


def test_prepare_warns_when_val_or_test_is_too_thin():
    """10 speakers x 10 files under the default 80/10/10 leave one val and one test file
    per speaker; prepare says so and what to do, and is quiet once the split is wide."""
    from pathlib import Path

    from voxid.cli.data_cmds import _thin_split_warning
    from voxid.data import assign_splits
    from voxid.data.corpus import Corpus, CorpusItem

    corpus = Corpus(
        [CorpusItem(Path(f"/c/s{s}/{i}.wav"), f"s{s}") for s in range(10) for i in range(10)]
    )
    warning = _thin_split_warning(assign_splits(corpus, seed=0))
    assert warning is not None
    assert warning.startswith("10 of 10 speakers") and "--split 0.6,0.2,0.2" in warning
    assert _thin_split_warning(assign_splits(corpus, ratios=(0.6, 0.2, 0.2), seed=0)) is None
    # speaker-disjoint val/test hold other voices: nothing to count per training speaker
    assert _thin_split_warning(assign_splits(corpus, by="speaker", seed=0)) is None


def test_user_errors_are_voxid_errors(speech_corpus, tmp_path):
    with pytest.raises(ConfigError, match="features"):
        _run("prepare", speech_corpus, "-o", tmp_path / "x.h5", "--features", "wavelets")
    with pytest.raises(ConfigError, match="split-rule"):
        _run("prepare", speech_corpus, "-o", tmp_path / "x.h5", "--split-rule", "take")
    with pytest.raises(DataError, match="no file has a split"):
        _run("prepare", speech_corpus, "-o", tmp_path / "x.h5", "--split-rule", "take:01=train")
    with pytest.raises(ConfigError, match="leave no speaker"):
        _run("prepare", speech_corpus, "-o", tmp_path / "x.h5", "--speakers", "zoe")
    assert not list(tmp_path.iterdir())


def test_prepare_max_seconds(tmp_path):
    """Long recordings (a 620 s lecture) are prepared with a higher --max-seconds, and a
    lower one refuses what the default keeps; 0 means no limit."""
    import soundfile as sf

    from conftest import tone

    root = tmp_path / "data"
    for spk in ("ann", "bob"):
        (root / spk).mkdir(parents=True)
        sf.write(root / spk / "0.wav", tone(2.0, 8000, freq=180.0 if spk == "ann" else 120.0), 8000)
    lecture = np.zeros(620 * 8000, np.float32)  # 2 s of voice, then the room: tiny as FLAC
    lecture[:16000] = tone(2.0, 8000)
    sf.write(root / "ann" / "lecture.flac", lecture, 8000)
    sf.write(root / "bob" / "long.wav", tone(40.0, 8000, freq=120.0), 8000)

    def used(*extra: str) -> tuple[int, dict[str, str]]:
        args = ("prepare", root, "-o", tmp_path / "s.h5", "--split", "1.0", "--workers", "1")
        report = json.loads(_run(*args, *extra, "--json").stdout)
        return report["files_used"], {
            s["path"].split("/")[-1]: s["reason"] for s in report["skipped"]
        }

    n, skipped = used()
    assert n == 3 and list(skipped) == ["lecture.flac"]
    assert "620.0 s is longer than the 600 s limit" in skipped["lecture.flac"]
    assert used("--max-seconds", "700") == (4, {})
    assert used("--max-seconds", "0") == (4, {})
    n, skipped = used("--max-seconds", "30")
    assert n == 2 and sorted(skipped) == ["lecture.flac", "long.wav"]
    assert "40.0 s is longer than the 30 s limit" in skipped["long.wav"]
    import h5py

    with h5py.File(tmp_path / "s.h5") as f:
        assert json.loads(f.attrs["prepare_config"])["max_seconds"] == 30


def test_protocol_a_one_command(shared_data, tmp_path):
    """asc30 P-A on a 2-speaker, 3-keyword subset: the `take` column drives the split."""
    manifest = tmp_path / "asc.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "speaker", "keyword", "take"])
        for spk in ("00000001", "00000022"):
            for kw in ("backward", "forward", "left"):
                for take in ("01", "02", "03", "04"):
                    w.writerow([shared_data / "asc30" / spk / f"{kw}_{take}.flac", spk, kw, take])
    out = tmp_path / "pa.h5"
    _run(
        "prepare",
        manifest,
        "-o",
        out,
        "--split-rule",
        "take:01,02,03=train;04=test",
        "--val-from-train",
        "0.34",
        "--workers",
        "1",
        "--json",
    )
    info = StoreInfo.open(out)
    t = info.items
    assert set(t["take"][t["split"] == "test"]) == {"04"}
    assert set(t["take"][np.isin(t["split"], ["train", "val"])]) == {"01", "02", "03"}
    assert len(np.unique(t["source"][t["split"] == "test"])) == 6
    assert len(np.unique(t["source"][t["split"] == "val"])) == 6  # 3 of 9 per speaker
    _run(
        "prepare",
        manifest,
        "-o",
        tmp_path / "pb.h5",
        "--split-rule",
        "take:01,02,03=train;04=test",
        "--unseen-speakers",
        "00000022",
        "--members",
        "00000001",
        "--workers",
        "1",
        "--json",
    )
    pb = StoreInfo.open(tmp_path / "pb.h5")
    unseen = pb.items["label"] == pb.speakers.index("00000022")
    assert set(pb.items["split"][unseen]) == {"test"} and pb.members == ["00000001"]


def test_eda_and_spectrograms_commands(speech_corpus, tmp_path):
    res = _run("eda", speech_corpus, "-o", tmp_path / "eda", "--max-files", "8", "--json")
    assert json.loads(res.stdout)["speakers"] == 4
    assert (tmp_path / "eda" / "report.md").exists()
    sub = tmp_path / "sub" / "alice"
    sub.mkdir(parents=True)
    shutil.copy(sorted((speech_corpus / "alice").glob("*.wav"))[0], sub)
    _run("spectrograms", tmp_path / "sub", tmp_path / "png")
    assert len(list((tmp_path / "png" / "alice").glob("*.png"))) == 1


def test_prepare_out_never_replaces_an_input_without_force(speech_corpus, tmp_path):
    data = tmp_path / "data"
    for voice in ("alice", "bruno"):
        (data / voice).mkdir(parents=True)
        for wav in sorted((speech_corpus / voice).glob("*.wav"))[:2]:
            shutil.copy(wav, data / voice)
    target = sorted((data / "alice").glob("*.wav"))[0]
    audio = target.read_bytes()
    args = ("prepare", data, "-o", target, "--split", "1.0", "--workers", "1", "--json")
    with pytest.raises(DataError, match=rf"{target.name}: exists and is not a voxid store"):
        _run(*args)
    assert target.read_bytes() == audio
    assert "--force" in _run("prepare", "--help").stdout
    _run(*args, "--force")
    assert StoreInfo.open(target).speakers == ["alice", "bruno"]


def test_prepare_vad_choice(speech_corpus, tmp_path):
    """`--vad silero` (the default) skips a 50 Hz hum as no speech; `--vad energy` takes it
    (steady sound is speech to an energy rule); the choice is stored with the data."""
    import soundfile as sf

    corpus = tmp_path / "c"
    for spk in ("alice", "bruno"):
        (corpus / spk).mkdir(parents=True)
        for path in sorted((speech_corpus / spk).glob("*.wav"))[:2]:
            shutil.copy(path, corpus / spk)
    t = np.arange(3 * 16000) / 16000
    sf.write(corpus / "bruno" / "hum.wav", 0.3 * np.sin(2 * np.pi * 50 * t), 16000)
    for vad, skipped in (("silero", ["hum.wav"]), ("energy", [])):
        out = tmp_path / f"{vad}.h5"
        args = ("prepare", corpus, "-o", out, "--split", "1.0", "--workers", "1", "--json")
        report = json.loads(_run(*args, "--vad", vad, "--vad-floor", "-60").stdout)
        assert [s["path"].rsplit("/", 1)[-1] for s in report["skipped"]] == skipped, report
        if skipped:
            assert "no speech found by the silero VAD" in report["skipped"][0]["reason"]
        vad_cfg = StoreInfo.open(out).audio_config["vad"]
        assert vad_cfg["method"] == vad and vad_cfg["floor_dbfs"] == -60.0
    with pytest.raises(ConfigError, match="--vad: must be silero, energy or off"):
        _run("prepare", corpus, "-o", tmp_path / "x.h5", "--vad", "webrtc")


def test_demo_corpus_voices_by_name_and_bad_requests(tmp_path):
    from voxid.demo import VOICES, synthesize_corpus
    from voxid.errors import VoxidError

    corpus = synthesize_corpus(tmp_path, voices=("walter", "alice"), n_sentences=1, offset=3)
    assert corpus.speakers == ("walter", "alice")
    rates = {sf.info(p).samplerate for p in (tmp_path / "walter").glob("*.wav")}
    assert rates == {16000} and len(list((tmp_path / "alice").glob("*_003.wav"))) == 1
    assert [v.name for v in VOICES[-3:]] == sorted(v.name for v in VOICES)[-3:]  # held out
    for kwargs, message in (
        ({"voices": ("nobody",)}, "unknown voice 'nobody'"),
        ({"voices": ()}, "none given"),
        ({"voices": ("alice",), "n_speakers": 1}, "not both"),
        ({"n_speakers": len(VOICES) + 1}, "between 1 and"),
    ):
        with pytest.raises(VoxidError, match=message):
            synthesize_corpus(tmp_path, **kwargs)
