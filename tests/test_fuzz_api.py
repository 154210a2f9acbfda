"""Property-based fuzz of the HTTP API from its own OpenAPI schema (issue #15).

Schemathesis reads `/openapi.json` from a real uvicorn server running the real app (every
middleware: host guard, body limit, error handler) and sends each operation generated
requests: valid ones, ones that break the schema, and multipart uploads whose bytes are
random, empty or mangled real speech. Whatever it sends, the answer must not be a 5xx.

Bounded and deterministic: 60 generated examples per operation (plus schemathesis's
coverage cases), derandomized (the same examples on every run), no example database. For
a deeper search, raise the count: `VOXID_FUZZ_EXAMPLES=1000 pytest tests/test_fuzz_api.py`.
"""

from __future__ import annotations

import io
import os
import struct

import httpx
import numpy as np
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from voxid.inference.recognizer import Recognizer
from voxid.server import create_app
from voxid.server.background import BackgroundServer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEY = "fuzz-key-0123456789"


#: Uploads the generator mixes into the schema's file fields: real speech and the hostile
#: cases of issue #15 (filled in by `fuzz_server`, before any example is generated).
AUDIO: list[tuple[str, bytes]] = []
#: Names mixed into the schema's name fields: enrolled, valid, reserved and hostile ones.
NAMES = ["alice", "Zoë", "bob", "unknown", "silence", "../../etc/passwd", "a" * 65,
         "x\x1b[31m", "Robert'); DROP TABLE speakers;--", " ", "\u202eevil"]  # fmt: skip


def _encode(wav: np.ndarray, sr: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _hostile_audio(speech: bytes) -> list[tuple[str, bytes]]:
    """Real speech, and what the issue found breaking the service: torn, mislabelled,
    silent, too short, absurd headers, a small file that decodes to a lot."""
    rng = np.random.default_rng(0)
    wav, sr = sf.read(io.BytesIO(speech), dtype="float32")
    lying = bytearray(_encode(wav[:1600], sr, "WAV", "PCM_16"))
    lying[24:32] = struct.pack("<II", 2_000_000_000, 4_000_000_000)  # rate, byte rate
    endless = bytearray(_encode(wav[:1600], sr, "WAV", "PCM_16"))
    endless[40:44] = struct.pack("<I", 0xFFFFFFF0)  # a data chunk far longer than the file
    wide = np.zeros((384_000 * 2, 8), np.float32)
    return [
        ("speech.wav", speech),
        ("speech.flac", _encode(wav, sr, "FLAC")),
        ("speech.ogg", _encode(wav, sr, "OGG", "VORBIS")),
        ("torn.wav", speech[: len(speech) // 3]),
        ("header_only.wav", speech[:44]),
        ("flipped.wav", bytes(b ^ 0xFF if i % 97 == 50 else b for i, b in enumerate(speech))),
        ("lying_rate.wav", bytes(lying)),
        ("endless.wav", bytes(endless)),
        ("silent.wav", _encode(np.zeros(32000, np.float32), 16000, "WAV")),
        ("noise.wav", _encode(rng.uniform(-1, 1, 32000).astype(np.float32), 16000, "WAV")),
        ("short.wav", _encode(wav[: sr // 5], sr, "WAV")),
        ("wide.flac", _encode(wide, 384_000, "FLAC", "PCM_16")),
        ("text.wav", b"hello, not audio\n" * 20),
        ("png.wav", b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 300, dtype=np.uint8))),
    ]


@pytest.fixture(scope="module")
def fuzz_server(speech_corpus, tmp_path_factory):
    """A live server with one enrolled speaker, so verify and identify reach the model."""
    db = tmp_path_factory.mktemp("fuzz") / "speakers.db"
    rec = Recognizer.load("base", registry=db, threads=1)  # the shipped model
    wav = sorted((speech_corpus / "alice").glob("*.wav"))[0]
    AUDIO[:] = _hostile_audio(wav.read_bytes())
    with BackgroundServer(create_app(rec, api_key=KEY, max_upload_mb=2)) as srv:
        r = httpx.post(
            srv.url + "/enroll",
            data={"name": "alice"},
            files={"files": (wav.name, wav.read_bytes(), "audio/wav")},
            headers={"X-API-Key": KEY},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        yield srv


def _app_schema() -> dict:
    """The OpenAPI schema `create_app` builds (no route reads the recognizer to build it)."""
    return create_app(None).openapi()


# Built at collection from the app itself (schemathesis's fixture-based lazy loader does not
# run under pytest 9); `test_the_fuzzed_schema_is_the_served_one` checks the server agrees.
schema = schemathesis.openapi.from_dict(_app_schema())


def test_the_fuzzed_schema_is_the_served_one(fuzz_server):
    assert httpx.get(fuzz_server.url + "/openapi.json").json() == _app_schema()


def _mix(body: dict, audio: int | None, name: int | None) -> dict:
    body = dict(body)
    if audio is not None:
        upload = AUDIO[audio][1]  # schemathesis names the part after its field
        for field in ("file", "files"):
            if field in body:
                body[field] = [upload, upload] if field == "files" and audio % 2 else upload
    if name is not None and "name" in body:
        body["name"] = NAMES[name]
    return body


@schema.hook
def flatmap_body(context, body):
    """Half the uploads carry real or hostile audio and a meaningful name instead of the
    schema's random bytes and strings, so requests also get past decoding and naming."""
    if not isinstance(body, dict) or not {"file", "files"} & body.keys():
        return st.just(body)
    maybe = lambda n: st.one_of(st.none(), st.integers(0, n - 1))  # noqa: E731
    return st.builds(_mix, st.just(body), maybe(len(AUDIO)), maybe(len(NAMES)))


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("VOXID_FUZZ_EXAMPLES", "60")),
    deadline=None,  # a request that reaches the model may take a second on a busy machine
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx(case, fuzz_server):
    # The right key, so enrol and delete get past the 401 to the code that handles input.
    response = case.call(base_url=fuzz_server.url, headers={"X-API-Key": KEY}, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
