"""The service and `--json` answer verify and identify with the same object (#16): the
result type's `to_dict()`, plus the upload's statistics (`audio`) that only the service has.

A real uvicorn server and the real typer app, on one registry and the same file."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from voxid.cli import app as cli
from voxid.inference.recognizer import Recognizer
from voxid.server import create_app
from voxid.server.background import BackgroundServer

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore::voxid.errors.VoxidWarning"),  # a 2-speaker test model
]


def shape(value: Any) -> Any:
    """The keys of `value`, recursively, with each leaf's JSON type (null is its own)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_http_and_json_answers_have_the_same_shape(random_model_file, speech_corpus, tmp_path):
    db = tmp_path / "speakers.db"
    alice = sorted((speech_corpus / "alice").glob("*.wav"))
    bruno = sorted((speech_corpus / "bruno").glob("*.wav"))
    rec = Recognizer.load(random_model_file, registry=db)
    rec.enroll("alice", alice[:2])
    rec.enroll("bruno", bruno[:1])
    probe = alice[3]
    opts = ("-m", str(random_model_file), "-r", str(db), "--json")
    with BackgroundServer(create_app(rec)) as srv, httpx.Client(base_url=srv.url) as http:
        upload = {"file": (probe.name, probe.read_bytes(), "audio/wav")}
        answers = {
            "verify": (
                http.post("/verify", data={"name": "alice"}, files=upload).json(),
                _cli("verify", "alice", str(probe), *opts),
            ),
            "identify": (
                http.post("/identify", params={"top_k": 2}, files=upload).json(),
                _cli("identify", str(probe), "-k", "2", *opts)[str(probe)],
            ),
        }
    for what, (served, printed) in answers.items():
        stats = served.pop("audio")
        assert set(stats) == {"filename", "duration_s", "speech_ratio", "rms_db"}, what
        assert shape(served) == shape(printed), what
        # The same file through the same model: the same answer, not only the same keys.
        assert served["name"] == printed["name"] and served["accepted"] == printed["accepted"]
        assert served["score"] == pytest.approx(printed["score"], abs=1e-5), what
    verified, _ = answers["verify"]
    assert {"source", "std", "accepted", "threshold"} <= set(verified)
    identified, _ = answers["identify"]
    assert identified["accepted"] is (identified["name"] != "unknown")
    assert [set(c) for c in identified["candidates"]] == [{"name", "score", "source"}] * 2
