"""Live identification: windowing, VAD gating, smoothing, the WebSocket and `voxid listen`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from voxid.audio import load_audio
from voxid.errors import ConfigError
from voxid.inference.recognizer import Recognizer
from voxid.server import create_app
from voxid.server.background import BackgroundServer
from voxid.stream import SILENCE, LiveIdentifier, SlidingWindow, StreamConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SR = 16000


@pytest.fixture(scope="module")
def conversation(speech_corpus, tmp_path_factory) -> tuple[Path, float, float]:
    """alice (2 sentences), 2.5 s of silence, bruno (2 sentences), 16 kHz WAV.

    Returns the path and the times (s) where the silence starts and ends.
    """

    def voice(name: str, idx: list[int]) -> np.ndarray:
        files = sorted((speech_corpus / name).glob("*.wav"))
        return np.concatenate([load_audio(files[i], sr=SR) for i in idx])

    alice, bruno = voice("alice", [4, 5]), voice("bruno", [4, 5])
    wav = np.concatenate([alice, np.zeros(int(2.5 * SR), np.float32), bruno])
    path = tmp_path_factory.mktemp("conv") / "conversation.wav"
    sf.write(path, wav, SR, subtype="PCM_16")
    return path, alice.size / SR, alice.size / SR + 2.5


def test_sliding_window_matches_direct_slicing():
    rng = np.random.default_rng(0)
    stream = rng.standard_normal(SR * 5).astype(np.float32)
    sw = SlidingWindow(SR, window_s=1.5, hop_s=0.5)
    windows, i = [], 0
    while i < stream.size:  # irregular block sizes, as a microphone delivers them
        n = int(rng.integers(1, 3000))
        windows += sw.push(stream[i : i + n])
        i += n
    assert [round(w.t_end, 3) for w in windows] == [1.5 + 0.5 * k for k in range(8)]
    for w in windows:
        start = round(w.t_start * SR)
        np.testing.assert_array_equal(w.samples, stream[start : start + int(1.5 * SR)])


@pytest.mark.parametrize(
    "bad",
    [{"window_s": 0.05}, {"hop_s": 3.0}, {"smoothing": 0}, {"min_speech_ratio": 1.5}, {"top_k": 0}],
)
def test_stream_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        StreamConfig(**bad)


def _enrolled_db(model: Path, db: Path, speech_corpus: Path) -> Path:
    # Someone to identify: the model's training classes are no candidates by default.
    Recognizer.load(model, registry=db).enroll(
        "alice", sorted((speech_corpus / "alice").glob("*.wav"))[:2]
    )
    return db


def test_silence_is_gated_and_speech_is_identified(
    random_model_file, conversation, speech_corpus, tmp_path
):
    path, gap_start, gap_end = conversation
    db = _enrolled_db(random_model_file, tmp_path / "speakers.db", speech_corpus)
    rec = Recognizer.load(random_model_file, registry=db)
    ident = LiveIdentifier(rec, StreamConfig(smoothing=1))
    wav = load_audio(path, sr=SR)
    decisions = []
    for i in range(0, wav.size, 1600):
        decisions += ident.process((wav[i : i + 1600] * 32767).astype(np.int16))
    assert len(decisions) == int((wav.size / SR - 1.5) / 0.5) + 1
    inside = [d for d in decisions if d.t_start >= gap_start + 0.1 and d.t_end <= gap_end - 0.1]
    speech = [d for d in decisions if d.t_end <= gap_start or d.t_start >= gap_end]
    assert inside and all(d.label == SILENCE and d.score is None for d in inside)
    assert speech and all(d.label != SILENCE and d.score is not None for d in speech)
    assert all(d.latency_ms > 0 for d in decisions)
    assert all(0 <= d.confidence <= 1 for d in decisions)


def test_who_speaks_when(trained_model, conversation, speech_corpus, tmp_path):
    path, gap_start, gap_end = conversation
    rec = Recognizer.load(trained_model, registry=tmp_path / "speakers.db")
    for name in ("alice", "bruno"):
        rec.enroll(name, sorted((speech_corpus / name).glob("*.wav"))[:3])
    wav = load_audio(path, sr=SR)
    decisions = LiveIdentifier(rec).process(wav)
    first = [d.label for d in decisions if d.t_end <= gap_start]
    last = [d.label for d in decisions if d.t_start >= gap_end + 1.0]
    assert first.count("alice") >= 0.8 * len(first), first
    assert last.count("bruno") >= 0.8 * len(last), last


def test_websocket_streams_decisions(random_model_file, conversation, speech_corpus, tmp_path):
    path, _gap_start, gap_end = conversation
    db = _enrolled_db(random_model_file, tmp_path / "speakers.db", speech_corpus)
    rec = Recognizer.load(random_model_file, registry=db)
    pcm = (load_audio(path, sr=SR)[: int(gap_end * SR)] * 32767).astype("<i2").tobytes()
    with BackgroundServer(create_app(rec)) as srv:
        url = srv.url.replace("http", "ws") + "/ws/live"
        with connect(url) as ws:
            ready = json.loads(ws.recv(timeout=10))
            assert ready["type"] == "ready" and ready["sample_rate"] == SR
            for i in range(0, len(pcm), 3200):
                ws.send(pcm[i : i + 3200])
            expected = int((len(pcm) / 2 / SR - 1.5) / 0.5) + 1
            decisions = [json.loads(ws.recv(timeout=30)) for _ in range(expected)]
            assert all(d["type"] == "decision" for d in decisions), decisions
            assert sum(d["dropped"] for d in decisions[-1:]) == 0  # 0.1 s frames: none dropped
        assert decisions[0]["label"] != SILENCE and decisions[-1]["label"] == SILENCE
        assert all(d["latency_ms"] >= 0 and "candidates" in d for d in decisions)
        times = [d["t_end"] for d in decisions]
        assert times == sorted(times)
        # Another site's page must not stream to a local server (WebSockets skip CORS).
        with pytest.raises(InvalidStatus):
            connect(url, origin="https://evil.example")
        with connect(url, origin=srv.url) as ws:
            json.loads(ws.recv(timeout=10))
            ws.send(b"\x00" * 3)  # not 16-bit samples
            msg = json.loads(ws.recv(timeout=10))
            assert msg["type"] == "error" and "16-bit" in msg["message"]


def _listen(model: Path, db: Path, wav: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voxid",
            "listen",
            str(model),
            "--registry",
            str(db),
            "--input",
            str(wav),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_listen_fast_prints_every_decision(
    random_model_file, conversation, speech_corpus, tmp_path
):
    path, _gap_start, _gap_end = conversation
    db = _enrolled_db(random_model_file, tmp_path / "speakers.db", speech_corpus)
    proc = _listen(random_model_file, db, path, "--fast", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    decisions = [json.loads(line) for line in out.splitlines()]
    duration = sf.info(path).duration
    assert len(decisions) == int((duration - 1.5) / 0.5) + 1
    assert any(d["label"] == SILENCE for d in decisions)
    assert "done:" in err and "Traceback" not in err


def test_listen_with_nobody_enrolled_says_so(random_model_file, conversation, tmp_path):
    """Nobody to answer with (a model's training classes are no candidates): one line and
    exit status 1 before listening, not a warning and then an error at the first word."""
    proc = _listen(random_model_file, tmp_path / "speakers.db", conversation[0], "--fast")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and out == ""
    assert err.strip() == (
        f"error: no speakers enrolled in {tmp_path / 'speakers.db'}: enrol someone first "
        "(voxid enroll NAME FILES)"
    )


@pytest.mark.slow
def test_listen_stops_cleanly_on_ctrl_c(random_model_file, conversation, speech_corpus, tmp_path):
    path, _, _ = conversation
    db = _enrolled_db(random_model_file, tmp_path / "speakers.db", speech_corpus)
    proc = _listen(random_model_file, db, path)  # real-time pacing
    try:
        first = proc.stdout.readline()  # blocks until the first decision (~1.5 s of audio)
        assert "latency" in first and "ms" in first, first
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 0, err
    assert "stopped:" in err and "Traceback" not in err and "KeyboardInterrupt" not in err


def test_listen_hears_quiet_speech_and_not_noise(
    random_model_file, speech_corpus, shared_data, tmp_path
):
    """Issue #15: real speech at -56 dBFS RMS is speech; -120 dBFS white noise and a 50 Hz
    hum are silence; and the printed speech ratio agrees with every silence decision."""
    from voxid.vad import VadConfig

    loud = load_audio(sorted((shared_data / "librispeech-100").glob("*/*"))[0], sr=SR)[: 8 * SR]
    speech = loud * (10 ** (-56 / 20) / np.sqrt(np.mean(loud.astype(np.float64) ** 2)))
    # windows that are clearly speech at the recorded level (the utterance has a pause)
    starts = [round(k * 0.5 * SR) for k in range(14)]
    clear = [VadConfig().speech_ratio(loud[a : a + int(1.5 * SR)], SR) > 0.5 for a in starts]
    t = np.arange(4 * SR) / SR
    white = 1e-6 * np.random.default_rng(0).standard_normal(4 * SR)
    hum = 0.3 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 150 * t)
    path = tmp_path / "quiet.wav"
    sf.write(path, np.concatenate([speech, white, hum]).astype(np.float32), SR, subtype="FLOAT")
    db = _enrolled_db(random_model_file, tmp_path / "speakers.db", speech_corpus)
    proc = _listen(random_model_file, db, path, "--fast", "--json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    decisions = [json.loads(line) for line in out.splitlines()]
    in_speech = [d for d in decisions if d["t_end"] <= 8.0]
    in_noise = [d for d in decisions if d["t_start"] >= 8.0]
    assert len(in_speech) == len(clear) and sum(clear) >= 8
    assert all(d["raw_label"] != SILENCE for d, c in zip(in_speech, clear, strict=True) if c)
    assert in_noise and all(d["raw_label"] == SILENCE for d in in_noise), in_noise
    for d in decisions:  # silence exactly when the shown ratio is under the gate
        assert (d["raw_label"] == SILENCE) == (d["speech_ratio"] * 1.5 < 0.5), d
