"""The HTTP service against a real uvicorn server on a loopback port, with real audio."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from conftest import PEAK_RSS_MB
from voxid.inference.recognizer import Recognizer
from voxid.inference.registry import Registry
from voxid.server import create_app
from voxid.server.background import BackgroundServer, free_port

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEY = "test-key-0123456789"
#: A reference that would make the page load something from another host.
EXTERNAL = re.compile(
    r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//"""
    r"""|from\s+["'](https?:)?//|import\(\s*["'](https?:)?//"""
)


@pytest.fixture
def server(random_model_file, tmp_path):
    """A fresh registry and a live server with an API key and a 2 MB upload limit."""
    rec = Recognizer.load(random_model_file, registry=tmp_path / "speakers.db")
    app = create_app(rec, api_key=KEY, max_upload_mb=2)
    with BackgroundServer(app) as srv:
        srv.registry = tmp_path / "speakers.db"
        yield srv


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "audio/wav")) for p in paths]


def _assert_clean(response: httpx.Response) -> None:
    """An error body is one JSON message: no traceback, no source paths."""
    text = response.text
    assert "Traceback" not in text and 'File "' not in text and ".py" not in text, text
    assert isinstance(response.json()["detail"], str)


def _enrolled(db: Path) -> list[str]:
    return Registry(db, None).names() if db.exists() else []


def test_page_health_and_docs(server):
    with httpx.Client(base_url=server.url) as http:
        health = http.get("/health").json()
        assert health["status"] == "ok" and health["speakers"] == 0  # training classes aren't
        assert health["sample_rate"] == 16000 and health["mutations"] is True
        page = http.get("/")
        assert page.status_code == 200 and "<title>voxid" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("app.js", "audio.js", "capture-worklet.js", "style.css"):
            assert http.get(f"/static/{asset}").status_code == 200
        # Everything the page loads is its own: no external URL in the page or its scripts.
        for asset in ("/", "/static/app.js", "/static/audio.js", "/static/style.css"):
            assert not EXTERNAL.search(http.get(asset).text), asset
        paths = http.get("/openapi.json").json()["paths"]
        assert {
            "/enroll",
            "/verify",
            "/identify",
            "/speakers",
            "/speakers/{name}",
            "/health",
        } <= set(paths)
        assert (
            "access-control-allow-origin"
            not in http.get("/health", headers={"Origin": "https://evil.example"}).headers
        )


def _ws_handshake(srv: BackgroundServer, host: str, origin: str | None) -> int:
    """The status a WebSocket handshake to `/ws/live` gets with these Host and Origin
    headers, sent over a real socket to the server (what a DNS-rebound page does)."""
    import socket

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    try:
        with connect(f"ws://{host}/ws/live", sock=sock, origin=origin, open_timeout=10):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_foreign_host_headers_are_refused(server):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 reaches
    the server with `Host: evil.example`; neither HTTP nor the WebSocket may answer it."""
    evil = f"evil.example:{server.port}"
    Registry(server.registry, "fp").close()  # something to leak: the registry exists
    with httpx.Client(base_url=server.url) as http:
        r = http.get("/speakers", headers={"Host": evil})
        assert r.status_code == 400, r.text
        assert evil in r.json()["detail"] and "--allowed-host" in r.json()["detail"]
        _assert_clean(r)
        assert http.post("/identify", headers={"Host": evil}).status_code == 400
        for ok in (f"localhost:{server.port}", f"[::1]:{server.port}", "127.0.0.1", "LOCALHOST"):
            assert http.get("/speakers", headers={"Host": ok}).status_code == 200, ok
    assert _ws_handshake(server, evil, f"http://{evil}") != 101
    assert _ws_handshake(server, evil, None) != 101
    assert _ws_handshake(server, f"127.0.0.1:{server.port}", None) == 101


def test_allowed_hosts_extend_the_loopback_names(random_model_file, tmp_path):
    rec = Recognizer.load(random_model_file, registry=tmp_path / "speakers.db")
    app = create_app(rec, api_key=KEY, allowed_hosts=["voxid.lan"])
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url) as http:
        assert http.get("/health", headers={"Host": f"voxid.lan:{srv.port}"}).status_code == 200
        assert http.get("/health", headers={"Host": "127.0.0.1"}).status_code == 200
        assert http.get("/health", headers={"Host": "evil.example"}).status_code == 400
        assert _ws_handshake(srv, f"voxid.lan:{srv.port}", f"http://voxid.lan:{srv.port}") == 101
    app = create_app(rec, api_key=KEY, allowed_hosts=["*"])
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url) as http:
        assert http.get("/health", headers={"Host": "anything.example"}).status_code == 200


def test_training_speakers_are_not_offered(server, speech_wav):
    """The model's training classes are no speakers of the service (#15 item 14): nobody is
    listed or counted, and identify and verify say nobody is enrolled."""
    wav = {"file": (speech_wav.name, speech_wav.read_bytes(), "audio/wav")}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.get("/health").json()["speakers"] == 0
        assert http.get("/speakers").json()["speakers"] == []
        r = http.post("/identify", files=wav)
        assert r.status_code == 409 and "no enrolled speakers" in r.json()["detail"]
        r = http.post("/verify", data={"name": "train_a"}, files=wav)
        assert r.status_code == 404 and "'train_a': not enrolled" in r.json()["detail"]


def test_serve_warns_at_start_when_the_model_heard_few_speakers(random_model_file, tmp_path):
    """`voxid serve` with a model of 2 training speakers says so before serving (#15 item 16)."""
    port = free_port()
    env = {**os.environ, "VOXID_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    args = ["serve", str(random_model_file), "--registry", str(tmp_path / "s.db")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxid", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not any("serving" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
    finally:
        proc.kill()
        proc.wait(10)
    warned = [line for line in lines if line.startswith("voxid: warning: ")]
    assert len(warned) == 1 and "trained on 2 speakers" in warned[0], lines
    assert "voxid models" in warned[0]


def test_enrol_verify_identify_delete(server, speech_corpus):
    alice = sorted((speech_corpus / "alice").glob("*.wav"))[:2]
    bruno = sorted((speech_corpus / "bruno").glob("*.wav"))[:1]
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": KEY}) as http:
        r = http.post("/enroll", data={"name": "Alice"}, files=_files(alice))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["enrolled"] == 2 and "Alice" in body["speakers"]
        assert all(a["speech_ratio"] > 0.5 and a["duration_s"] > 1 for a in body["audio"])
        assert http.post("/enroll", data={"name": "Bruno"}, files=_files(bruno)).status_code == 200

        speakers = {s["name"]: s for s in http.get("/speakers").json()["speakers"]}
        assert speakers["Alice"]["n_utterances"] == 2 and speakers["Alice"]["source"] == "enrolled"

        wav = {"file": (bruno[0].name, bruno[0].read_bytes(), "audio/wav")}
        v = http.post("/verify", data={"name": "Bruno"}, files=wav).json()
        assert v["accepted"] and v["score"] > 0.99 and v["score"] >= v["threshold"]
        ident = http.post("/identify", params={"top_k": 3}, files=wav).json()
        assert ident["name"] == "Bruno" and len(ident["candidates"]) == 2  # enrolled only
        scores = [c["score"] for c in ident["candidates"]]
        assert scores == sorted(scores, reverse=True)

        assert http.delete("/speakers/Bruno").json()["removed"] == "Bruno"
        gone = http.post("/verify", data={"name": "Bruno"}, files=wav)
        assert gone.status_code == 404 and "Bruno" in gone.json()["detail"]
        assert http.delete("/speakers/Bruno").status_code == 404
    assert _enrolled(server.registry) == ["Alice"]


def test_noise_and_hum_are_refused_as_no_speech(server, speech_wav):
    """Issue #15: 20 s of white noise at -120 dBFS was verified with speech_ratio 1.0 and a
    50 Hz hum identified as a speaker; both are now "no speech" (422), nothing enrolled."""
    t = np.arange(20 * 16000) / 16000
    noises = {
        "white.wav": 1e-6 * np.random.default_rng(0).standard_normal(t.size),
        "hum.wav": 0.3 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 150 * t),
    }
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": KEY}) as http:
        ok = http.post("/enroll", data={"name": "ann"}, files=_files([speech_wav]))
        assert ok.status_code == 200 and ok.json()["audio"][0]["speech_ratio"] > 0.8
        for name, wav in noises.items():
            buf = io.BytesIO()
            sf.write(buf, wav.astype(np.float32), 16000, format="WAV", subtype="FLOAT")
            upload = {"file": (name, buf.getvalue(), "audio/wav")}
            for url, data in (("/verify", {"name": "ann"}), ("/identify", {})):
                r = http.post(url, data=data, files=upload)
                assert r.status_code == 422, (url, name, r.text)
                assert f"{name}: no speech found (speech ratio 0%" in r.json()["detail"], r.text
                _assert_clean(r)
            files = [("files", upload["file"])]
            assert http.post("/enroll", data={"name": "bob"}, files=files).status_code == 422
    assert _enrolled(server.registry) == ["ann"]


def test_trained_model_tells_voices_apart(trained_model, speech_corpus, tmp_path):
    files = {v: sorted((speech_corpus / v).glob("*.wav")) for v in ("alice", "bruno")}
    rec = Recognizer.load(trained_model, registry=tmp_path / "speakers.db")
    with (
        BackgroundServer(create_app(rec, api_key=KEY)) as srv,
        httpx.Client(base_url=srv.url, timeout=60, headers={"X-API-Key": KEY}) as http,
    ):
        for voice, paths in files.items():
            r = http.post("/enroll", data={"name": voice}, files=_files(paths[:4]))
            assert r.status_code == 200, r.text

        def verify(name: str, path: Path) -> dict:
            return http.post(
                "/verify", data={"name": name}, files={"file": (path.name, path.read_bytes())}
            ).json()

        # Held-out sentences: the same voice is accepted, the other refused.
        same, other = verify("alice", files["alice"][6]), verify("alice", files["bruno"][6])
        assert same["accepted"] and not other["accepted"], (same, other)
        assert same["score"] > other["score"] + 0.2
        held_out = files["bruno"][7]
        ident = http.post("/identify", files={"file": (held_out.name, held_out.read_bytes())})
        assert ident.json()["name"] == "bruno", ident.json()


def test_parallel_workers_answer_as_one_worker(random_model_file, speech_corpus, tmp_path):
    """Concurrent requests over two inference workers score exactly as one at a time."""
    import asyncio

    from voxid.errors import ConfigError

    paths = sorted(speech_corpus.rglob("*.wav"))[:6]
    rec = Recognizer.load(random_model_file, registry=tmp_path / "speakers.db", threads=1)
    app = create_app(rec, api_key=KEY, workers=2)
    assert app.state.service.workers == 2
    with BackgroundServer(app) as srv:
        with httpx.Client(base_url=srv.url, timeout=60, headers={"X-API-Key": KEY}) as http:
            assert http.post("/enroll", data={"name": "ref"}, files=_files(paths[:1])).is_success
            one_by_one = [
                http.post(
                    "/verify", data={"name": "ref"}, files={"file": (p.name, p.read_bytes())}
                ).json()["score"]
                for p in paths
            ]

        async def burst() -> list[float]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
                replies = await asyncio.gather(
                    *(
                        client.post(
                            "/verify",
                            data={"name": "ref"},
                            files={"file": (p.name, p.read_bytes())},
                        )
                        for p in paths * 3
                    )
                )
            return [r.json()["score"] for r in replies]

        assert asyncio.run(burst()) == pytest.approx(one_by_one * 3, abs=1e-6)
    with pytest.raises(ConfigError, match="workers"):
        create_app(rec, workers=0)


def test_mutations_need_the_key(server, speech_wav, random_model_file, tmp_path):
    files = _files([speech_wav])
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
            r = http.post("/enroll", data={"name": "eve"}, files=files, headers=headers)
            assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
            assert http.delete("/speakers/eve", headers=headers).status_code == 401
    assert _enrolled(server.registry) == []
    # A server started without a key refuses every mutation, even with a header.
    rec = Recognizer.load(random_model_file, registry=tmp_path / "other.db")
    with BackgroundServer(create_app(rec)) as srv, httpx.Client(base_url=srv.url) as http:
        r = http.post("/enroll", data={"name": "eve"}, files=files, headers={"X-API-Key": KEY})
        assert r.status_code == 401 and "no API key" in r.json()["detail"]
        assert http.get("/health").json()["mutations"] is False


def test_requests_read_no_speaker_rows_when_nothing_changed(
    random_model_file, tmp_path, speech_wav
):
    """Issue #17: /identify, /verify and /health listed every enrolled speaker from the
    registry on each request (seconds at 100,000 voices); they now ask the in-memory index."""
    rec = Recognizer.load(random_model_file, registry=tmp_path / "speakers.db")
    rec.enroll("alice", [speech_wav])
    reads: list[str] = []
    registry = rec.registry
    for method in ("speakers", "centroids", "names"):
        real = getattr(registry, method)

        def spy(*args, _real=real, _name=method, **kwargs):
            reads.append(_name)
            return _real(*args, **kwargs)

        setattr(registry, method, spy)
    with BackgroundServer(create_app(rec)) as srv, httpx.Client(base_url=srv.url) as http:
        audio = {"file": ("q.wav", speech_wav.read_bytes(), "audio/wav")}
        assert http.post("/identify", files=audio).status_code == 200  # the index loads
        reads.clear()
        assert http.post("/identify", files=audio).status_code == 200
        assert http.post("/verify", data={"name": "alice"}, files=audio).status_code == 200
        assert http.get("/health").json()["speakers"] == 1
        assert http.post("/verify", data={"name": "bob"}, files=audio).status_code == 404
    assert reads == []


def test_oversized_uploads_get_413(server, speech_wav):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 90).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, noise, 16000, format="WAV", subtype="PCM_16")  # about 2.9 MB
    big = buf.getvalue()
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": KEY}) as http:
        r = http.post("/enroll", data={"name": "big"}, files={"files": ("big.wav", big)})
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        _assert_clean(r)

        # Without Content-Length (chunked), the limit is enforced while the body streams.
        encoded = httpx.Request("POST", server.url, files={"file": ("big.wav", big)})
        body = encoded.read()

        def chunks():
            for i in range(0, len(body), 64_000):
                yield body[i : i + 64_000]

        r = http.post(
            "/identify", content=chunks(), headers={"Content-Type": encoded.headers["Content-Type"]}
        )
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]
        assert http.get("/health").status_code == 200  # the server is fine afterwards
    assert _enrolled(server.registry) == []


def _post_slowly(url: str, length: int, chunked: bool) -> bytes:
    """POST a `length`-byte multipart upload to /identify over a raw socket in small
    pieces, as a slow client does, then read the whole response (an error if the server
    reset the connection while we were sending)."""
    import socket
    import time
    from urllib.parse import urlsplit

    part = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    body = part + b"x" * (length - len(part))
    parts = urlsplit(url)
    head = f"POST /identify HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
    head += "Content-Type: multipart/form-data; boundary=B\r\nConnection: close\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body)}\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall((head + "\r\n").encode())
        step = 65_536
        for i, start in enumerate(range(0, len(body), step)):
            data = body[start : start + step]
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            if i % 16 == 0:
                time.sleep(0.01)  # let the server answer while we are still sending
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        response = b""
        while chunk := sock.recv(65_536):
            response += chunk
    return response


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_client_still_sending_reads_the_413_not_a_reset(server, chunked):
    """Issue #15: the server answered an over-limit upload and closed while the client was
    still sending, so the client saw "connection reset" instead of the upload-limit message."""
    response = _post_slowly(server.url, 6_000_000, chunked)  # the fixture's limit is 2 MB
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"upload limit" in response


def test_wide_uploads_are_refused_without_a_memory_jump(random_model_file, wide_flac, tmp_path):
    """Three small uploads that decode to 737 MB each (issue #15): a 422 from the header."""
    code = f"""
import asyncio, json, httpx
from voxid.inference.recognizer import Recognizer
from voxid.server import create_app
from voxid.server.background import BackgroundServer
{PEAK_RSS_MB}
rec = Recognizer.load({str(random_model_file)!r}, registry={str(tmp_path / "s.db")!r}, threads=1)
data = open({str(wide_flac)!r}, "rb").read()

async def three(url):
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(
            *(client.post("/identify", files={{"file": ("wide.flac", data)}}) for _ in range(3))
        )

with BackgroundServer(create_app(rec, api_key="k")) as srv:
    httpx.get(srv.url + "/health")
    before = peak_rss_mb()
    replies = asyncio.run(three(srv.url))
    grown = peak_rss_mb() - before
print(json.dumps([[r.status_code, r.json()["detail"]] for r in replies] + [grown]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    *replies, grown_mb = json.loads(out.stdout.splitlines()[-1])
    for status, detail in replies:
        assert status == 422 and "\n" not in detail, detail
        assert re.fullmatch(r"wide\.flac: 60\.0 s x 8 channels at 384000 Hz .* limit .*", detail)
    assert grown_mb < 100, f"the server's peak RSS grew by {grown_mb} MB"


def test_concurrent_decodes_are_bounded_by_the_workers(
    random_model_file, speech_wav, tmp_path, monkeypatch
):
    """However many uploads arrive at once, no more than `workers` decode at a time."""
    import asyncio

    import voxid.audio

    real, lock = voxid.audio.load_audio, threading.Lock()
    running, most = [0], [0]

    def counting_load_audio(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.2)  # long enough for the other requests to arrive meanwhile
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(voxid.audio, "load_audio", counting_load_audio)
    rec = Recognizer.load(random_model_file, registry=tmp_path / "speakers.db", threads=1)
    data = speech_wav.read_bytes()

    async def burst(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            replies = await asyncio.gather(
                *(client.post("/identify", files={"file": ("a.wav", data)}) for _ in range(5))
            )
        return [r.status_code for r in replies]

    for workers in (1, 2):
        most[0] = 0
        with BackgroundServer(create_app(rec, workers=workers)) as srv:
            assert asyncio.run(burst(srv.url)) == [409] * 5  # decoded, then: nobody enrolled
        assert most[0] == workers


def test_bad_input_gets_4xx_with_the_cause(server, speech_wav, write_wav):
    silent = write_wav("silent.wav", np.zeros(32000, np.float32))
    short = write_wav("short.wav", np.zeros(5, np.float32))
    good = ("file", (speech_wav.name, speech_wav.read_bytes(), "audio/wav"))
    cases = [
        (
            "post",
            "/identify",
            {},
            {"file": ("junk.wav", b"RIFF\x00\x00garbage" * 50)},
            422,
            "junk.wav",
        ),
        ("post", "/identify", {}, {"file": ("empty.wav", b"")}, 422, "empty.wav"),
        (
            "post",
            "/identify",
            {},
            {"file": ("silent.wav", silent.read_bytes())},
            422,
            "digital silence",
        ),
        ("post", "/identify", {}, {"file": ("short.wav", short.read_bytes())}, 422, "short.wav"),
        ("post", "/identify?top_k=0", {}, dict([good]), 422, "top_k"),
        ("post", "/verify", {"name": "../../etc/passwd"}, dict([good]), 422, "name"),
        ("post", "/verify", {"name": "nobody"}, dict([good]), 404, "nobody"),
        ("post", "/verify", {"name": "x"}, {}, 422, "file"),
        ("post", "/enroll", {"name": "unknown"}, {"files": good[1]}, 422, "reserved"),
        ("post", "/enroll", {"name": "silence"}, {"files": good[1]}, 422, "reserved"),
        ("post", "/enroll", {"name": "a" * 65}, {"files": good[1]}, 422, "64"),
        (
            "post",
            "/enroll",
            {"name": "ok"},
            {"files": ("x.txt", b"hello, not audio")},
            422,
            "x.txt",
        ),
    ]
    with httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": KEY}) as http:
        for method, url, data, files, status, cause in cases:
            r = http.request(method, url, data=data, files=files or None)
            assert r.status_code == status, (url, data, r.text)
            assert cause in r.json()["detail"], (url, r.text)
            _assert_clean(r)
    assert _enrolled(server.registry) == []


def test_unexpected_errors_are_a_generic_500(random_model_file, tmp_path):
    rec = Recognizer.load(random_model_file, registry=tmp_path / "speakers.db")
    app = create_app(rec, api_key=KEY)

    def broken() -> None:
        raise RuntimeError("secret internal detail at /srv/voxid/app.py line 3")

    app.add_api_route("/broken", broken)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url) as http:
        r = http.get("/broken")
        assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
        assert http.get("/health").status_code == 200


@pytest.mark.slow
def test_killed_server_keeps_committed_enrolments(random_model_file, speech_corpus, tmp_path):
    db = tmp_path / "speakers.db"
    port = free_port()
    # No key given: `voxid serve` generates one and prints it for whoever started it.
    env = {k: v for k, v in os.environ.items() if k != "VOXID_API_KEY"}
    proc = subprocess.Popen(
        serve_argv(random_model_file, db, port),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        line = b""
        while b"API key" not in line:
            line = proc.stderr.readline()
            assert line, "voxid serve exited without printing its API key"
        key = line.decode().rsplit(" ", 1)[-1].strip()
        assert len(key) >= 16
        _wait_up(url, proc)
        voices = {v: sorted((speech_corpus / v).glob("*.wav")) for v in ("alice", "bruno")}
        with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": key}) as http:
            for voice, paths in voices.items():
                assert (
                    http.post("/enroll", data={"name": voice}, files=_files(paths[:2])).status_code
                    == 200
                )
        before = {v: Registry(db, None).embeddings(v) for v in voices}
        # A long enrolment is in flight when the server is killed: 20 files of ~24 s
        # (several seconds of inference even on a fast, idle machine).
        from voxid.audio import load_audio

        long = np.concatenate(
            [load_audio(p) for p in sorted((speech_corpus / "chloe").glob("*.wav"))]
        )
        sf.write(tmp_path / "chloe_long.wav", long, 16000, subtype="PCM_16")
        many = [tmp_path / "chloe_long.wav"] * 20
        errors: list[Exception] = []

        def enrol_chloe() -> None:
            try:
                httpx.post(
                    f"{url}/enroll",
                    data={"name": "chloe"},
                    files=_files(many),
                    headers={"X-API-Key": key},
                    timeout=60,
                )
            except httpx.HTTPError as exc:
                errors.append(exc)

        t = threading.Thread(target=enrol_chloe)
        t.start()
        time.sleep(1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        t.join(60)
        assert errors, "the enrolment finished before the kill; the test proves nothing"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reg = Registry(db, None)
    assert reg.names() in (["alice", "bruno"], ["alice", "bruno", "chloe"])
    for voice, emb in before.items():
        np.testing.assert_array_equal(reg.embeddings(voice), emb)
    if "chloe" in reg.names():  # all or nothing
        assert reg.get("chloe").n_utterances == len(many)
    import sqlite3

    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def serve_argv(model: Path, db: Path, port: int, *extra: str) -> list[str]:
    """The command line of a real `voxid serve` process on `port`."""
    return [sys.executable, "-m", "voxid", "serve", str(model), "--registry", str(db),
            "--port", str(port), *extra]  # fmt: skip


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("server did not start")


def test_service_never_imports_lightning(random_model_file, tmp_path):
    code = (
        "import sys; from voxid import Recognizer; from voxid.server import create_app;"
        "import voxid.stream, voxid.cli.serve_cmds;"
        f"create_app(Recognizer.load({str(random_model_file)!r}, "
        f"registry={str(tmp_path / 'r.db')!r}));"
        "assert not any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_serve_allowed_host_option(random_model_file, tmp_path):
    """`voxid serve --allowed-host NAME` answers for NAME and the loopback names only."""
    port = free_port()
    proc = subprocess.Popen(
        serve_argv(
            random_model_file,
            tmp_path / "speakers.db",
            port,
            "--api-key",
            KEY,
            "--allowed-host",
            "voxid.lan",
            "--allowed-host",
            "Other.Lan",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc)
        with httpx.Client(base_url=url) as http:
            for name in ("voxid.lan", "other.lan", "localhost"):
                r = http.get("/health", headers={"Host": f"{name}:{port}"})
                assert r.status_code == 200, name
            assert http.get("/health", headers={"Host": f"evil.example:{port}"}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(10)


def test_statuses_come_from_the_error_class(random_model_file, speech_wav, tmp_path):
    """Unknown speaker 404, nobody enrolled 409, another model's registry 409: each from the
    recogniser's typed error (#16). The registry's name holds "unknown", which the old
    message-text rule turned into a 404 for the model mismatch."""
    from voxid.errors import NoSpeakersEnrolled, RegistryError, UnknownSpeaker

    audio = {"file": ("q.wav", speech_wav.read_bytes(), "audio/wav")}
    rec = Recognizer.load(random_model_file, registry=tmp_path / "team.db")
    app = create_app(rec, api_key=KEY)

    def odd_unknown() -> None:
        raise UnknownSpeaker("the moon is made of cheese")

    def worded_like_a_404() -> None:
        raise RegistryError("speaker 'x': not enrolled, unknown to us")

    def odd_nobody() -> None:
        raise NoSpeakersEnrolled("speaker 'x': not enrolled")

    app.add_api_route("/odd-unknown", odd_unknown)
    app.add_api_route("/worded-like-a-404", worded_like_a_404)
    app.add_api_route("/odd-nobody", odd_nobody)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        r = http.post("/identify", files=audio)
        assert r.status_code == 409, r.text
        assert "no enrolled speakers to compare with: enrol someone first" in r.json()["detail"]
        rec.enroll("alice", [speech_wav])
        r = http.post("/verify", data={"name": "nobody"}, files=audio)
        assert r.status_code == 404, r.text
        assert r.json()["detail"] == "speaker 'nobody': not enrolled"
        r = http.delete("/speakers/nobody", headers={"X-API-Key": KEY})
        assert r.status_code == 404 and "'nobody': not enrolled in" in r.json()["detail"]
        assert http.post("/identify", files=audio).status_code == 200
        # Only the class counts, whatever the message says.
        r = http.get("/odd-unknown")
        assert r.status_code == 404 and r.json() == {"detail": "the moon is made of cheese"}
        assert http.get("/worded-like-a-404").status_code == 409
        assert http.get("/odd-nobody").status_code == 409

    other = tmp_path / "unknown-voices.db"
    Registry(other, "another-model").add("alice", np.eye(4, dtype=np.float32)[:1])
    rec = Recognizer.load(random_model_file, registry=other)
    with (
        BackgroundServer(create_app(rec, api_key=KEY)) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as http,
    ):
        for r in (
            http.post("/identify", files=audio),
            http.post("/verify", data={"name": "alice"}, files=audio),
            http.post(
                "/enroll",
                data={"name": "bob"},
                files=[("files", audio["file"])],
                headers={"X-API-Key": KEY},
            ),
        ):
            assert r.status_code == 409, r.text
            assert "enrolled with model another-model" in r.json()["detail"]
            _assert_clean(r)
    assert Registry(other, None).names() == ["alice"]


def test_a_registry_that_cannot_be_reached_is_503(random_model_file, speech_wav, tmp_path):
    """A registry locked past its timeout (or a database server that refuses) is the
    server's trouble, not the request's: 503, and the request may be tried again."""
    import sqlite3

    from voxid.inference.registry import Registry as SqliteRegistry

    path = tmp_path / "busy.db"
    fingerprint = Recognizer.load(random_model_file, registry=None).model_fingerprint
    rec = Recognizer.load(
        random_model_file, registry=SqliteRegistry(path, fingerprint, timeout=0.2)
    )
    rec.registry.names()  # the file and its tables exist before someone locks it
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    audio = [("files", ("a.wav", speech_wav.read_bytes(), "audio/wav"))]
    try:
        with (
            BackgroundServer(create_app(rec, api_key=KEY)) as srv,
            httpx.Client(base_url=srv.url, timeout=60) as http,
        ):
            r = http.post("/enroll", data={"name": "alice"}, files=audio,
                          headers={"X-API-Key": KEY})  # fmt: skip
            assert r.status_code == 503, r.text
            assert "busy.db: cannot write (database is locked)" in r.json()["detail"]
            holder.execute("ROLLBACK")
            r = http.post("/enroll", data={"name": "alice"}, files=audio,
                          headers={"X-API-Key": KEY})  # fmt: skip
            assert r.status_code == 200, r.text
    finally:
        holder.close()
