"""Messages and help text a user reads (#15 item 17): what the input is called, what is
wrong with it, and nothing else (no object reprs, no raw control characters, no library
noise), through real files, real processes and a real server."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys

import httpx
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import tone
from test_recognizer import make_model
from voxid.audio import AudioDecodeError, load_audio
from voxid.cli import app
from voxid.errors import ConfigError

KEY = "messages-test-key"


def voxid(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "voxid", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80", **(env or {})},
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("msg") / "model.pt")


@pytest.fixture(scope="module")
def enrolled(model, speech_corpus, tmp_path_factory):
    """A registry with alice enrolled for `model`."""
    from voxid.inference.recognizer import Recognizer

    db = tmp_path_factory.mktemp("msg_db") / "speakers.db"
    Recognizer.load(model, db).enroll("alice", sorted((speech_corpus / "alice").glob("*.wav"))[:2])
    return db


def _corpus_with(speech_corpus, tmp_path, *bad_names: str):
    """alice and bruno (2 files each) plus corrupt files under these names in alice/."""
    root = tmp_path / "corpus"
    for voice in ("alice", "bruno"):
        (root / voice).mkdir(parents=True)
        for wav in sorted((speech_corpus / voice).glob("*.wav"))[:2]:
            shutil.copy(wav, root / voice)
    for name in bad_names:
        (root / "alice" / name).write_bytes(b"RIFF\x00\x00garbage" * 50)
    return root


def test_in_memory_audio_errors_name_the_input_not_a_bytesio():
    junk = b"RIFF\x00\x00garbage" * 50
    with pytest.raises(AudioDecodeError) as err:
        load_audio(junk, name="junk.wav")
    assert str(err.value) == "junk.wav: corrupt or truncated audio (Format not recognised.)"
    with pytest.raises(AudioDecodeError) as err:
        load_audio(io.BytesIO(b"hello, not audio" * 10))
    assert "BytesIO" not in str(err.value) and "object at 0x" not in str(err.value)


def test_a_reason_keeps_a_file_name_with_a_colon(speech_corpus, tmp_path):
    """`take: one.wav` is reported whole, and its reason is the cause, not `one.wav: ...`."""
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare

    root = _corpus_with(speech_corpus, tmp_path, "take: one.wav")
    corpus = assign_splits(load_corpus(root), ratios=(1.0,))
    report = prepare(corpus, tmp_path / "s.h5", PrepareConfig(), workers=1)
    ((path, reason),) = report.skipped
    assert path.endswith("take: one.wav")
    assert reason == "corrupt or truncated audio (Format not recognised.)"


def test_control_characters_in_file_names_are_escaped(speech_corpus, tmp_path, model, enrolled):
    """An ANSI escape or a newline in a file name must not reach the terminal raw."""
    evil = "red\x1b[31m\nline.wav"
    root = _corpus_with(speech_corpus, tmp_path, evil)
    proc = voxid("prepare", root, "-o", tmp_path / "s.h5", "--split", "1", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "\x1b" not in out and "red\\x1b[31m\\nline.wav" in out, out
    proc = voxid("verify", "alice", root / "alice" / evil, "-m", model, "-r", enrolled)
    assert proc.returncode == 1 and "\x1b" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "red\\x1b[31m\\nline.wav" in proc.stderr


def test_implausible_sample_rate_is_reported_as_such(tmp_path):
    buf = io.BytesIO()
    sf.write(buf, tone(2.0), 16000, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    data[24:32] = struct.pack("<II", 2_000_000_000, 4_000_000_000)  # rate, byte rate
    path = tmp_path / "fast.wav"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioDecodeError, match=r"fast\.wav: implausible sample rate 2000000000 Hz"):
        load_audio(path)


def test_short_upload_is_named_by_its_file(model, speech_corpus, tmp_path):
    from voxid.inference.recognizer import Recognizer
    from voxid.server import create_app
    from voxid.server.background import BackgroundServer

    alice = sorted((speech_corpus / "alice").glob("*.wav"))[:2]
    buf = io.BytesIO()
    sf.write(buf, tone(0.2), 16000, format="WAV")
    short = {"file": ("short-tone.wav", buf.getvalue(), "audio/wav")}
    rec = Recognizer.load(model, tmp_path / "s.db")
    with (
        BackgroundServer(create_app(rec, api_key=KEY)) as srv,
        httpx.Client(base_url=srv.url, timeout=60, headers={"X-API-Key": KEY}) as http,
    ):
        files = [("files", (p.name, p.read_bytes(), "audio/wav")) for p in alice]
        assert http.post("/enroll", data={"name": "alice"}, files=files).status_code == 200
        for r in (
            http.post("/identify", files=short),
            http.post("/verify", data={"name": "alice"}, files=short),
            http.post("/enroll", data={"name": "bob"}, files={"files": short["file"]}),
        ):
            detail = r.json()["detail"]
            assert r.status_code == 422 and detail.startswith("short-tone.wav: "), detail
            assert "audio array" not in detail and "speech" in detail
        junk = {"file": ("junk.wav", b"RIFF\x00\x00garbage" * 50, "audio/wav")}
        detail = http.post("/identify", files=junk).json()["detail"]
        assert "BytesIO" not in detail and detail.startswith("junk.wav: corrupt"), detail


def test_listen_on_a_clip_shorter_than_a_window_says_so(model, enrolled, tmp_path):
    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(1.0), 16000)
    proc = voxid("listen", model, "--registry", enrolled, "--input", clip, "--fast")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {clip}: 1.00 s of audio is shorter than one window (1.5 s): no decision; "
        "give a longer clip or a shorter --window"
    )


def test_split_fractions_that_do_not_add_up_are_refused(speech_corpus, tmp_path):
    root = _corpus_with(speech_corpus, tmp_path)
    args = ["prepare", str(root), "-o", str(tmp_path / "s.h5"), "--workers", "1"]
    for bad in ("1.2,0.1", "0.5,0.2", "8,1,1", "0.9,-0.1,0.2"):
        with pytest.raises(ConfigError, match=r"--split: .*add up to 1"):
            CliRunner().invoke(app, [*args, "--split", bad], catch_exceptions=False)
    assert not (tmp_path / "s.h5").exists()
    for good in ("0.8,0.1,0.1", "90,10", "1"):
        result = CliRunner().invoke(app, [*args, "--split", good], catch_exceptions=False)
        assert result.exit_code == 0, result.output


def _option_names(command: str) -> list[str]:
    import typer

    cmd = typer.main.get_command(app).commands[command]
    return [o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]


@pytest.mark.parametrize("command", ["prepare", "calibrate", "identify", "serve", "evaluate"])
def test_help_fits_80_columns_with_whole_option_names_and_no_bool_type(command):
    proc = voxid(command, "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "<bool>" not in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    words = set(text.replace(",", " ").replace("/", " ").split())
    missing = [name for name in _option_names(command) if name not in words]
    assert not missing, missing


def test_calibrate_help_keeps_its_default_note():
    text = " ".join(voxid("calibrate", "--help").stdout.split())
    assert "Utterances per enrolment (default: 3, fewer if the split is small)." in text


def test_export_prints_no_pytorch_warnings(model, tmp_path):
    proc = voxid("export", model, "--onnx", tmp_path / "m.onnx")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.startswith("wrote ")


def test_train_prints_no_lightning_tips(speech_corpus, tmp_path):
    from voxid.data import assign_splits, load_corpus
    from voxid.data.prepare import PrepareConfig, prepare

    store = tmp_path / "s.h5"
    corpus = assign_splits(load_corpus(_corpus_with(speech_corpus, tmp_path)), ratios=(0.5, 0.5))
    prepare(corpus, store, PrepareConfig(), workers=1)
    small = ["model.conv_channels=[8,16,16]", "model.gru_hidden=16", "model.embedding_dim=16"]
    args = ["epochs=1", "batch_size=8", "num_workers=0", "patience=0", *small]
    proc = voxid("train", "crnn", *args, "--data", store, "-o", tmp_path / "run", "-q")
    assert proc.returncode == 0, proc.stderr
    for noise in ("Tip", "litlogger", "litmodels", "GPU available", "TPU available"):
        assert noise not in proc.stderr, proc.stderr
    assert "model.pt" in proc.stdout


def test_evaluation_reports_get_the_permissions_of_metrics_json(tmp_path):
    from voxid.checkpoint import atomic_write
    from voxid.evaluation.common import write_json, write_text

    metrics = atomic_write(tmp_path / "metrics.json", lambda tmp: tmp.write_text("{}"))
    report = write_text(tmp_path / "report.md", "# report\n")
    data = write_json(tmp_path / "report.json", {"eer": 0.1})
    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    for path in (metrics, report, data):
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert json.loads(data.read_text()) == {"eer": 0.1}


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (0, dict(integer=True), "n: must be a positive integer, got 0"),
        (True, dict(integer=True), "n: must be a positive integer, got True"),
        (2.5, dict(integer=True), "n: must be a positive integer, got 2.5"),
        (-(10**400), dict(integer=True), "n: must be a positive integer, got -1000"),
        ("3", dict(), "n: must be a positive number, got '3'"),
        (float("nan"), dict(), "n: must be a positive number, got nan"),
        (float("inf"), dict(seconds=True), "n: must be a positive number of seconds, got inf"),
        (None, dict(seconds=True), "n: must be a positive number of seconds, got None"),
    ],
)
def test_every_positive_parameter_is_refused_in_one_wording(value, kind, expected):
    from voxid.errors import require_positive

    with pytest.raises(ConfigError) as err:
        require_positive("n", value, **kind)
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)


def test_positive_parameters_pass_as_numbers_of_any_kind():
    import numpy as np

    from voxid.errors import require_positive

    for value, kind in [(1, dict(integer=True)), (np.int64(3), dict(integer=True)),
                        (10**400, dict(integer=True)), (0.5, dict(seconds=True)),
                        (np.float32(2.0), dict()), (None, dict(optional=True))]:  # fmt: skip
        require_positive("n", value, **kind)
