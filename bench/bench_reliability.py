"""Hostile input and misuse against a real `voxid serve` process and the real CLI (#15).

Four parts, each row a figure against the issue's target, with pass/fail:

- **Compressed bomb**: a ~0.5 MB FLAC of 119 s, 8 channels at 384 kHz (1.46 GB once decoded
  as float32) sent to `/identify`, once and 3 at once; the server's RSS (psutil, every
  20 ms) above its idle level, and the HTTP statuses. Target: under 300 MB for 3 at once.
- **Mixed load**: 8 clients x 50 requests mixing enrol, verify, identify, list, delete of
  nobody, and bad requests (empty, corrupt, wrong format, lying headers, a huge HTTP header,
  hostile names, a wrong key, an oversized body). Targets: 0 5xx, 0 dropped connections,
  every request answered as its kind must be, and 0 lost enrolments (every 2xx enrolment is
  in `/speakers` at the end, with exactly as many utterances as were accepted).
- **kill -9**: of `voxid prepare` while it writes (the store is absent, or the earlier one
  intact; the next prepare leaves no `.partial`), of `voxid train` during a checkpoint
  save (last.ckpt loads, `--resume` finishes), of `voxid serve` during enrolments (the
  SQLite registry passes its integrity check, committed speakers are unchanged, an
  enrolment in flight is all or nothing, and a restarted server lists them).
- **VAD**: the frame-level F1 figures of bench/results/vad.json (bench/bench_vad.py).

    .venv/bin/python bench/bench_reliability.py [--model base] [--clients 8] [--requests 50]

The server runs the shipped base model (no training needed) with its defaults. A few
minutes on 2 cores; BENCH_QUICK=1 makes a smaller run (8 x 10 requests, one bomb size).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import percentile, wait_up
from common import BENCH, RESULTS, quick, write_result

KEY = "bench-reliability-key"
VOICES = ("alice", "bruno", "chloe", "david")
#: Enrolment names the clients share (several clients enrol the same speaker at once),
#: including names that are valid but unusual: quotes, brackets, accents in NFD form.
SHARED_NAMES = ("ana", "O'Brien (2)", "Zoe\u0301", "jean-luc", "x@y.z", "Łukasz", "李雷", "a b")
#: Names the service must refuse with 422: traversal, escapes, reserved, too long, empty.
BAD_NAMES = (
    "../../etc/passwd",
    "x\x1b[31mred",
    "unknown",
    "silence",
    "a" * 65,
    " ",
    "Robert'); DROP TABLE speakers;--",
    "\u202egpj.exe",
    "nul\x00byte",
)
UPLOAD_MB = 5


# -- the server ---------------------------------------------------------------------------


class Server:
    """A `voxid serve` process on a free loopback port; a context manager."""

    def __init__(self, model: str, db: Path, log: Path, *extra: str) -> None:
        from voxid.server.background import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = [
            sys.executable,
            "-m",
            "voxid",
            "serve",
            model,
            "--registry",
            str(db),
            "--port",
            str(self.port),
            *extra,
        ]
        self._log = log.open("wb")
        # A file, not a pipe: nobody reads a pipe during the run, and a full one blocks.
        self.proc = subprocess.Popen(
            argv, env={**os.environ, "VOXID_API_KEY": KEY}, stdout=self._log, stderr=self._log
        )

    def __enter__(self) -> Server:
        wait_up(self.url, self.proc, self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


class RssSampler:
    """The RSS of a process, sampled every `interval` seconds in a thread; peak in MB."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def idle_rss_mb(pid: int, seconds: float = 1.0) -> float:
    """The median RSS of an idle process over `seconds`, in MB."""
    proc, samples = psutil.Process(pid), []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(proc.memory_info().rss)
        time.sleep(0.02)
    return float(np.median(samples)) / 2**20


# -- uploads ------------------------------------------------------------------------------


def bomb_flac(path: Path, seconds: int = 119, sr: int = 384_000, channels: int = 8) -> Path:
    """`seconds` of `channels`-channel FLAC at `sr`: a tone in channel 0's first second,
    zeros after; about 4 KB per second on disk, 12 MB per second once decoded."""
    block = np.zeros((sr, channels), np.float32)
    with sf.SoundFile(path, "w", sr, channels, format="FLAC", subtype="PCM_16") as f:
        block[:, 0] = 0.2 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)
        f.write(block)
        block[:, 0] = 0.0
        for _ in range(seconds - 1):
            f.write(block)
    return path


def _encode(wav: np.ndarray, sr: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def bad_uploads(speech: bytes) -> list[tuple[str, bytes]]:
    """Uploads the service must refuse with a 4xx: each names what is wrong with it."""
    rng = np.random.default_rng(0)
    wav, sr = sf.read(io.BytesIO(speech), dtype="float32")
    lying = bytearray(_encode(wav[:1600], sr, subtype="PCM_16"))
    lying[24:32] = struct.pack("<II", 2_000_000_000, 4_000_000_000)  # rate, byte rate
    return [
        ("empty.wav", b""),
        ("random.wav", rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()),
        ("torn.wav", speech[:60]),  # a header and 16 bytes of a 2 s clip
        ("header_only.wav", speech[:44]),
        ("text.wav", b"hello, this is not audio\n" * 40),
        ("image.png", b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes()),
        ("lying_rate.wav", bytes(lying)),
        ("silent.wav", _encode(np.zeros(32000, np.float32), 16000)),
        ("short.wav", _encode(wav[: sr // 5], sr)),
    ]


def enrol_voices(server: Server, clips: list[bytes]) -> None:
    """Enrol the speakers that verify and identify ask about, one clip each."""
    with httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": KEY}) as http:
        for i, voice in enumerate(VOICES):
            r = http.post("/enroll", data={"name": voice}, files={"files": ("v.wav", clips[i * 6])})
            r.raise_for_status()


# -- part 1: the compressed bomb ----------------------------------------------------------


async def _post_many(url: str, path: str, payloads: list[tuple[str, bytes]]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        replies = await asyncio.gather(
            *(http.post(path, files={"file": p}) for p in payloads), return_exceptions=True
        )
    return [r.status_code if isinstance(r, httpx.Response) else -1 for r in replies]


def bomb_rows(server: Server, bombs: list[tuple[Path, list[int]]], speech: bytes) -> list[dict]:
    """Peak RSS above idle while `n` copies of each bomb (and, for scale, 3 speech clips)
    are sent to /identify at once."""
    cases = []
    for bomb, counts in bombs:
        info = sf.info(bomb)
        what = (
            f"; upload {bomb.stat().st_size / 1e3:.0f} KB, {info.duration:.0f} s x "
            f"{info.channels} ch at {info.samplerate} Hz = "
            f"{info.frames * info.channels * 4 / 1e6:.0f} MB as float32"
        )
        cases += [(f"{bomb.stem} x{n} -> /identify", bomb.name, bomb.read_bytes(), n, what)
                  for n in counts]  # fmt: skip
    cases.append(("speech clip x3 -> /identify (for scale)", "speech.wav", speech, 3, ""))
    rows = []
    for case, name, payload, n, what in cases:
        asyncio.run(_post_many(server.url, "/identify", [("warm.wav", speech)]))
        idle = idle_rss_mb(server.proc.pid)
        with RssSampler(server.proc.pid) as rss:
            start = time.perf_counter()
            statuses = asyncio.run(_post_many(server.url, "/identify", [(name, payload)] * n))
            wall = time.perf_counter() - start
        above = rss.peak / 2**20 - idle
        bomb = bool(what)
        rows.append(
            {
                "part": "bomb",
                "case": case,
                "figure": round(above, 1),
                "unit": "MB peak RSS above idle",
                "target": "< 300 MB, no 5xx" if bomb and n == 3 else "",
                "pass": (above < 300 and all(0 < s < 500 for s in statuses)) if bomb else None,
                "detail": f"HTTP {','.join(map(str, statuses))} in {wall:.2f} s; idle "
                f"{idle:.0f} MB; {rss.samples} samples" + what,
            }
        )
    return rows


# -- part 2: 8 clients x 50 mixed requests ------------------------------------------------


def _request_plan(client: int, n: int, clips: list[bytes], bad: list[tuple[str, bytes]]):
    """`n` (kind, expected statuses, request kwargs) for one client; seeded per client."""
    rng = random.Random(client)
    big = b"\0" * int((UPLOAD_MB + 1) * 1e6)
    kinds = ["enroll"] * 8 + ["verify"] * 6 + ["identify"] * 6 + ["list"] * 4 + ["bad"] * 8
    kinds += ["bad_name"] * 4 + ["wrong_key"] + ["delete_nobody"] * 2 + ["huge_header"]
    kinds += ["huge_filename", "oversized"]
    plan = []
    for _ in range(n):
        kind = rng.choice(kinds)
        clip = ("clip.wav", rng.choice(clips), "audio/wav")
        if kind == "enroll":
            k = rng.choice((1, 1, 2))
            name = rng.choice(SHARED_NAMES)
            req = {
                "method": "POST",
                "url": "/enroll",
                "data": {"name": name},
                "files": [("files", ("clip.wav", rng.choice(clips))) for _ in range(k)],
            }
            plan.append((kind, {200}, req, k))
        elif kind == "verify":
            name = rng.choice(VOICES)
            req = {
                "method": "POST",
                "url": "/verify",
                "data": {"name": name},
                "files": {"file": clip},
            }
            plan.append((kind, {200}, req, 0))
        elif kind == "identify":
            req = {"method": "POST", "url": "/identify", "files": {"file": clip}}
            plan.append((kind, {200}, req, 0))
        elif kind == "list":
            plan.append((kind, {200}, {"method": "GET", "url": "/speakers"}, 0))
        elif kind == "bad":
            path = rng.choice(("/identify", "/verify", "/enroll"))
            upload = rng.choice(bad)
            field = "files" if path == "/enroll" else "file"
            data = {"name": "alice"} if path != "/identify" else {}
            req = {"method": "POST", "url": path, "data": data, "files": {field: upload}}
            plan.append((f"bad upload ({upload[0]})", {422}, req, 0))
        elif kind == "bad_name":
            name = rng.choice(BAD_NAMES)
            path = rng.choice(("/enroll", "/verify"))
            field = "files" if path == "/enroll" else "file"
            req = {"method": "POST", "url": path, "data": {"name": name}, "files": {field: clip}}
            plan.append(("hostile name", {422}, req, 0))
        elif kind == "wrong_key":
            req = {
                "method": "POST",
                "url": "/enroll",
                "data": {"name": "mallory"},
                "files": {"files": clip},
                "headers": {"X-API-Key": "guess"},
            }
            plan.append((kind, {401}, req, 0))
        elif kind == "delete_nobody":
            name = rng.choice(("nobody", "..%2F..%2Fetc", "%00", "a" * 300))
            plan.append(
                ("delete nobody", {404, 422}, {"method": "DELETE", "url": f"/speakers/{name}"}, 0)
            )
        elif kind == "huge_header":
            req = {"method": "GET", "url": "/speakers", "headers": {"X-Padding": "a" * 70_000}}
            # Uvicorn (h11) refuses a header it has to wait for past 16 KB with 400, and
            # parses one that arrived whole: either is an answer, never a 5xx.
            plan.append(("huge HTTP header", {200, 400, 431}, req, 0))
        elif kind == "huge_filename":
            req = {
                "method": "POST",
                "url": "/identify",
                "files": {"file": ("n" * 20_000 + ".wav", clip[1])},
            }
            plan.append(("huge file name", {200, 400, 422}, req, 0))
        else:
            req = {"method": "POST", "url": "/identify", "files": {"file": ("big.wav", big)}}
            # 413 at once from Content-Length, then the connection closes: a client still
            # sending may see the close before it reads the answer.
            plan.append(("oversized body", {413, "closed"}, req, 0))
    return plan


async def _mixed_load(url: str, plans: list[list]) -> list[dict]:
    """Run every client's plan at once; one record per request."""
    records: list[dict] = []

    async def client(plan: list) -> None:
        # One connection per client, as separate users would have.
        async with httpx.AsyncClient(base_url=url, timeout=120, headers={"X-API-Key": KEY}) as http:
            for kind, expected, req, n_files in plan:
                start = time.perf_counter()
                rec = {"kind": kind, "expected": expected, "files": n_files, "status": None}
                try:
                    r = await http.request(**req)
                    rec["status"] = r.status_code
                    if kind == "enroll" and r.status_code == 200:
                        rec["name"] = r.json()["name"]
                    elif r.status_code >= 500 or r.status_code not in expected:
                        rec["body"] = r.text[:200]
                except httpx.HTTPError as exc:
                    # The server may answer early and close while the client still sends
                    # (a body over the limit); anything else is a dropped request.
                    closed = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
                    rec["status"] = "closed" if isinstance(exc, closed) else "error"
                    rec["error"] = repr(exc)[:200]
                rec["ms"] = (time.perf_counter() - start) * 1000
                records.append(rec)

    await asyncio.gather(*(client(p) for p in plans))
    return records


def load_rows(server: Server, db: Path, clips: list[bytes], speech: bytes, args) -> list[dict]:
    """The mixed load, then every accepted enrolment looked up in /speakers and the file."""
    from voxid.inference.registry import Registry

    with httpx.Client(base_url=server.url, timeout=120) as http:
        base = {s["name"]: s["n_utterances"] for s in http.get("/speakers").json()["speakers"]}
    bad = bad_uploads(speech)
    plans = [_request_plan(c, args.requests, clips, bad) for c in range(args.clients)]
    start = time.perf_counter()
    records = asyncio.run(_mixed_load(server.url, plans))
    wall = time.perf_counter() - start
    with httpx.Client(base_url=server.url, timeout=60) as http:
        listed = {s["name"]: s["n_utterances"] for s in http.get("/speakers").json()["speakers"]}
        health = http.get("/health").status_code

    accepted: Counter[str] = Counter()
    for rec in records:
        if rec["kind"] == "enroll" and rec["status"] == 200:
            accepted[rec["name"]] += rec["files"]
    # Lost: an accepted utterance that is not there, over HTTP or in the SQLite file.
    registry = Registry(db, None)
    in_file = {name: registry.get(name).n_utterances for name in registry.names()}
    lost = sum(max(0, n - listed.get(name, 0) + base.get(name, 0)) for name, n in accepted.items())
    lost_file = sum(
        max(0, n - in_file.get(name, 0) + base.get(name, 0)) for name, n in accepted.items()
    )
    extra = sum(max(0, listed.get(n, 0) - base.get(n, 0) - accepted.get(n, 0)) for n in listed)
    nfc = {unicodedata.normalize("NFC", n) for n in SHARED_NAMES}
    stray = sorted(set(listed) - set(base) - nfc)

    answered = [r for r in records if isinstance(r["status"], int)]
    server_errors = [r for r in answered if r["status"] >= 500]
    dropped = [r for r in records if r not in answered and r["status"] not in r["expected"]]
    unexpected = [r for r in answered if r["status"] not in r["expected"]]
    odd = Counter((r["kind"], r["status"]) for r in unexpected + dropped)
    oversized = Counter(r["status"] for r in records if r["kind"] == "oversized body")
    by_kind: dict[str, list[float]] = {}
    for rec in records:
        by_kind.setdefault(rec["kind"].split(" (")[0], []).append(rec["ms"])
    statuses = Counter(r["status"] for r in records)
    total = len(records)
    desc = f"{args.clients} clients x {args.requests} mixed requests"
    first = (server_errors + dropped + unexpected)[:1]
    rows = [
        {
            "part": "load",
            "case": f"{desc}: 5xx answers",
            "figure": len(server_errors),
            "unit": "requests",
            "target": "0",
            "pass": not server_errors,
            "detail": f"{total} requests in {wall:.1f} s; statuses "
            + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)),
        },
        {
            "part": "load",
            "case": f"{desc}: dropped connections",
            "figure": len(dropped),
            "unit": "requests",
            "target": "0",
            "pass": not dropped,
            "detail": f"/health afterwards: {health}; bodies over the limit: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(oversized.items(), key=str))
            + " ('closed': the server answered 413 and closed while the client still sent)",
        },
        {
            "part": "load",
            "case": f"{desc}: answered otherwise than expected",
            "figure": len(unexpected),
            "unit": "requests",
            "target": "0",
            "pass": not unexpected,
            "detail": (
                ", ".join(f"{k} -> {v}: {n}" for (k, v), n in odd.most_common())
                + "; first: "
                + json.dumps({k: v for k, v in first[0].items() if k != "expected"}, default=str)[
                    :300
                ]
            )
            if first
            else "",
        },
        {
            "part": "load",
            "case": f"{desc}: lost enrolments",
            "figure": lost + lost_file,
            "unit": "utterances",
            "target": "0",
            "pass": lost == lost_file == 0 and not extra and not stray,
            "detail": f"{sum(accepted.values())} accepted utterances into {len(accepted)} shared "
            f"speakers (enrolled by several clients at once); missing from /speakers "
            f"{lost}, from the SQLite file {lost_file}; unaccounted extra {extra}; "
            f"stray names {stray}",
        },
    ]
    everything = [r["ms"] for r in records]
    rows.append(
        {
            "part": "load",
            "case": f"{desc}: latency p50 / p99",
            "figure": f"{percentile(everything, 50):.0f} / {percentile(everything, 99):.0f}",
            "unit": "ms",
            "target": "",
            "pass": None,  # no target: a figure to watch
            # Other jobs may share the cores: the load average says how quiet the machine was.
            "detail": "; ".join(
                f"{k} {percentile(v, 50):.0f}/{percentile(v, 99):.0f}"
                for k, v in sorted(by_kind.items())
            )
            + f"; load average {os.getloadavg()[0]:.1f}",
        }
    )
    return rows


# -- part 3: kill -9 ----------------------------------------------------------------------


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "voxid", *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def _kill_row(case: str, ok: bool, detail: str, target: str) -> dict:
    return {
        "part": "kill -9",
        "case": case,
        "figure": "pass" if ok else "FAIL",
        "unit": "",
        "target": target,
        "pass": ok,
        "detail": detail,
    }


def long_corpus(speech_dir: Path, root: Path, copies: int) -> Path:
    """Each voice's sentences joined into one ~15 s file, `copies` times per voice."""
    for voice in VOICES:
        parts = [sf.read(p, dtype="float32") for p in sorted((speech_dir / voice).glob("*.wav"))]
        sr = parts[0][1]
        wav = np.concatenate([w for w, _ in parts])
        (root / voice).mkdir(parents=True, exist_ok=True)
        for i in range(copies):
            sf.write(root / voice / f"{i:03d}.wav", wav, sr, subtype="PCM_16")
    return root


def _kill_when(proc: subprocess.Popen, ready, timeout: float, delay: float = 0.0) -> bool:
    """SIGKILL `proc` once `ready()` (after `delay` s); False if it ended first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return False
        time.sleep(0.0005)
    time.sleep(delay)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def kill_prepare_rows(speech_dir: Path, tmp: Path, copies: int) -> tuple[list[dict], Path]:
    """kill -9 of prepare mid-write, with no store yet and over an earlier store."""
    from voxid.data.store import StoreInfo

    big = long_corpus(speech_dir, tmp / "long", copies)
    out_dir = tmp / "stores"
    out_dir.mkdir()
    out = out_dir / "store.h5"
    argv = [
        sys.executable,
        "-m",
        "voxid",
        "prepare",
        str(big),
        "-o",
        str(out),
        "--workers",
        "1",
        "--split",
        "0.5,0.25,0.25",
    ]

    def partials() -> list[Path]:
        return list(out_dir.glob(".store.h5.*.partial"))

    rows = []
    for earlier in (False, True):
        if earlier:
            r = _cli(
                "prepare",
                str(speech_dir),
                "-o",
                str(out),
                "--workers",
                "1",
                "--split",
                "0.5,0.25,0.25",
            )
            assert r.returncode == 0, r.stderr[-2000:]
            before = StoreInfo.open(out).fingerprint
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mid = _kill_when(proc, lambda: bool(partials()), 120, delay=0.5)
        left = [p.name for p in partials()]
        if earlier:
            try:
                intact = StoreInfo.open(out).fingerprint == before
            except Exception as exc:  # a torn store: the failure this row reports
                intact, left = False, [*left, f"store unreadable: {exc}"]
            state = "earlier store intact" if intact else "earlier store CHANGED"
        else:
            intact = not out.exists()
            state = "no store (absent)" if intact else "a store appeared"
        # The next prepare into that folder removes the dead run's partial file.
        r = _cli(
            "prepare",
            str(speech_dir),
            "-o",
            str(out_dir / "next.h5"),
            "--workers",
            "1",
            "--split",
            "0.5,0.25,0.25",
        )
        after = [p.name for p in out_dir.glob(".*.partial")]
        ok = mid and intact and r.returncode == 0 and not after
        rows.append(
            _kill_row(
                f"voxid prepare killed mid-write ({'over an earlier store' if earlier else 'new store'})",  # noqa: E501
                ok,
                f"killed while writing: {mid}; {state}; partial files after the kill "
                f"{len(left)}, after the next prepare {len(after)} (rc {r.returncode})",
                "store intact or absent; no .partial after the next run",
            )
        )
    return rows, out_dir / "next.h5"


def kill_train_rows(store: Path, tmp: Path) -> list[dict]:
    """kill -9 of `voxid train` while it writes last.ckpt (TMPDIR on another filesystem
    where /dev/shm is one), then `--resume`."""
    import torch

    run = tmp / "run"
    overrides = [
        "epochs=4",
        "limit_train_batches=1",
        "limit_val_batches=1",
        "batch_size=8",
        "num_workers=0",
    ]
    shm = Path("/dev/shm")
    other = shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp.stat().st_dev
    tmpdir = Path(tempfile.mkdtemp(dir=shm if other else tmp, prefix="voxid-bench-"))
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1"}
    argv = [
        sys.executable,
        "-m",
        "voxid",
        "train",
        "crnn",
        *overrides,
        "-d",
        str(store),
        "-o",
        str(run),
        "-q",
    ]
    try:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def saving() -> bool:
            # The second save of last.ckpt: there is an earlier one it must not tear.
            return (run / "last.ckpt").exists() and bool(list(run.glob(".last.ckpt.*.tmp")))

        mid = _kill_when(proc, saving, 300)
        last = run / "last.ckpt"
        size = last.stat().st_size if last.exists() else 0
        try:
            epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
            loads = True
        except Exception as exc:  # a torn checkpoint: the failure this row reports
            epoch, loads = repr(exc)[:80], False
        resumed = subprocess.run(
            [*argv, "--resume"], env=env, capture_output=True, text=True, timeout=600
        )
        big_tmp = [p for p in tmpdir.rglob("*") if p.is_file() and p.stat().st_size > 2**20]
        ok = mid and loads and size > 0 and resumed.returncode == 0 and (run / "model.pt").exists()
        detail = (
            f"killed during a save: {mid}; last.ckpt {size / 1e6:.1f} MB, loads: {loads} "
            f"(epoch {epoch}); --resume rc {resumed.returncode}"
            + (f" ({resumed.stderr.strip().splitlines()[-1][:120]})" if resumed.returncode else "")
            + f"; TMPDIR on {'/dev/shm' if other else 'the same disk'}, "
            f"{len(big_tmp)} checkpoint-sized files there"
        )
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return [
        _kill_row(
            "voxid train killed during a checkpoint save",
            ok and not big_tmp,
            detail,
            "last.ckpt whole (not 0 bytes); --resume works",
        )
    ]


def kill_server_rows(model: str, speech_dir: Path, tmp: Path) -> list[dict]:
    """kill -9 of `voxid serve` while enrolments are in flight, then reopen the registry."""
    from voxid.audio import load_audio
    from voxid.inference.registry import Registry

    db = tmp / "killed.db"
    # 20 files of 25 s per enrolment (16 MB, under the default upload limit): seconds of
    # decoding, speech detection and embedding each, so the kill lands mid-enrolment even
    # on a fast machine that runs the four at once.
    chloe = np.concatenate([load_audio(p) for p in sorted((speech_dir / "chloe").glob("*.wav"))])
    long = np.tile(chloe, 1 + 25 * 16000 // chloe.size)[: 25 * 16000]
    data = _encode(long, 16000, subtype="PCM_16")
    files = [("files", (f"long{i}.wav", data)) for i in range(20)]
    with Server(model, db, tmp / "killed.log") as server:
        with httpx.Client(base_url=server.url, timeout=120, headers={"X-API-Key": KEY}) as http:
            for voice in ("alice", "bruno"):
                paths = sorted((speech_dir / voice).glob("*.wav"))[:2]
                http.post(
                    "/enroll",
                    data={"name": voice},
                    files=[("files", (p.name, p.read_bytes())) for p in paths],
                ).raise_for_status()
        before = {v: Registry(db, None).embeddings(v) for v in ("alice", "bruno")}
        outcomes: list[str] = []

        def enrol(name: str) -> None:
            try:
                r = httpx.post(
                    f"{server.url}/enroll",
                    data={"name": name},
                    files=files,
                    headers={"X-API-Key": KEY},
                    timeout=120,
                )
                outcomes.append(str(r.status_code))
            except httpx.HTTPError:
                outcomes.append("cut")

        threads = [threading.Thread(target=enrol, args=(f"late{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        for t in threads:
            t.join(120)
    problems = []
    try:
        check = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            problems.append(f"integrity_check: {check}")
        reg = Registry(db, None)
        names = reg.names()
        for voice, emb in before.items():
            if not np.array_equal(reg.embeddings(voice), emb):
                problems.append(f"{voice} changed")
        torn = [n for n in names if n.startswith("late") and reg.get(n).n_utterances != 20]
        if torn:
            problems.append(f"half enrolments: {torn}")
        with Server(model, db, tmp / "restarted.log") as again:
            listed = [s["name"] for s in httpx.get(again.url + "/speakers").json()["speakers"]]
        if sorted(listed) != sorted(names):
            problems.append(f"restarted server lists {listed}, the file has {names}")
    except Exception as exc:  # any failure to open or read the registry is this row's failure
        problems.append(f"{type(exc).__name__}: {exc}")
        names = []
    cut = outcomes.count("cut")
    ok = not problems and cut > 0
    detail = (
        f"enrolments in flight at the kill: {cut} of {len(outcomes)} cut; registry afterwards "
        f"{sorted(names)}; integrity ok, committed speakers unchanged, in-flight all or nothing"
        if ok
        else f"enrolments in flight at the kill: {cut} of {len(outcomes)} cut (answers "
        f"{sorted(outcomes)}: the kill came too late to prove anything); " + "; ".join(problems)
    )
    return [
        _kill_row(
            "voxid serve killed during enrolments",
            ok,
            detail,
            "registry opens, consistent; nothing half-enrolled",
        )
    ]


# -- part 4: the VAD figures --------------------------------------------------------------


def vad_rows(path: Path | None = None) -> list[dict]:
    """Median frame-level F1 per VAD and SNR over the noises, from bench_vad.py's results
    (a quick run's own, else the measured ones)."""
    if path is None:
        path = next(
            (p for p in (RESULTS / "vad.json", BENCH / "results" / "vad.json") if p.exists()),
            RESULTS / "vad.json",
        )
    if not path.exists():
        return [
            {
                "part": "VAD",
                "case": "frame-level F1 (bench/bench_vad.py)",
                "figure": None,
                "unit": "F1",
                "target": "",
                "pass": None,
                "detail": f"{path.name} not written yet: run bench/bench_vad.py, then this",
            }
        ]
    res = json.loads(path.read_text())
    groups: dict[tuple[str, float], dict[str, float]] = {}
    for row in res.get("rows", []):
        if row.get("f1") is None or "vad" not in row:
            continue
        # Clean speech (no SNR) first, then from the quietest noise to the loudest.
        snr = float("inf") if row.get("snr_db") is None else float(row["snr_db"])
        groups.setdefault((str(row["vad"]), snr), {})[str(row.get("noise"))] = float(row["f1"])
    rows = []
    for (vad, snr), f1s in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        clean = snr == float("inf")
        rows.append(
            {
                "part": "VAD",
                "case": f"{vad} VAD, "
                + ("clean speech" if clean else f"speech + noise at {snr:g} dB SNR"),
                "figure": round(float(np.median(list(f1s.values()))), 3),
                "unit": "frame F1" if clean else f"frame F1, median of {len(f1s)} noises",
                "target": "",
                "pass": None,
                "detail": ", ".join(f"{k} {v:.3f}" for k, v in sorted(f1s.items()))
                + f" (bench/results/vad.json, {res.get('date', '?')})",
            }
        )
    return rows


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    """Run the four parts and write bench/results/reliability.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base", help="model for voxid serve")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--requests", type=int, default=10 if quick() else 50, help="requests per client"
    )
    parser.add_argument(
        "--vad-only",
        action="store_true",
        help="refresh the VAD rows of an earlier result, measure nothing",
    )
    args = parser.parse_args()
    out = RESULTS / "reliability.json"
    if args.vad_only:
        old = json.loads(out.read_text())
        rows = [r for r in old["rows"] if r.get("part") != "VAD"] + vad_rows()
        path = write_result(
            "reliability", old["title"], rows, notes=old["notes"], command=old["command"]
        )
        # The figures above the VAD rows are still those of the earlier run: keep its date.
        path.write_text(json.dumps({**json.loads(path.read_text()), "date": old["date"]}, indent=2))
        return

    from voxid.demo import synthesize_corpus

    t0 = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        speech_dir = tmp / "speech"
        synthesize_corpus(speech_dir, n_speakers=len(VOICES), n_sentences=6)
        clips = [p.read_bytes() for v in VOICES for p in sorted((speech_dir / v).glob("*.wav"))]
        speech = clips[0]
        # The upload (refused from its header), and the largest one of that shape the
        # decoded-size limit lets through (120 s x 384 000 samples/s), which is decoded.
        bombs = [(bomb_flac(tmp / "compressed bomb.flac"), [3] if quick() else [1, 3])]
        if not quick():
            bombs.append((bomb_flac(tmp / "largest accepted bomb.flac", seconds=15), [1, 3]))
        db = tmp / "speakers.db"
        with Server(args.model, db, tmp / "server.log", "--max-upload-mb", str(UPLOAD_MB)) as srv:
            enrol_voices(srv, clips)
            rows += bomb_rows(srv, bombs, speech)
            print(*rows, sep="\n", flush=True)
            rows += load_rows(srv, db, clips, speech, args)
            print(*rows[-5:], sep="\n", flush=True)
        kills, store = kill_prepare_rows(speech_dir, tmp, copies=10 if quick() else 25)
        rows += kills
        rows += kill_train_rows(store, tmp)
        rows += kill_server_rows(args.model, speech_dir, tmp)
        print(*rows[-4:], sep="\n", flush=True)
    rows += vad_rows()
    notes = (
        f"Server: `voxid serve {args.model}` (the shipped base model) in its own process with "
        f"its defaults and `--max-upload-mb {UPLOAD_MB}`; clients: httpx on the same machine. "
        "RSS is psutil's resident set size of the server process sampled every 20 ms; idle is "
        "its median over the second before the requests. The load's clips are espeak-ng "
        "sentences (22.05 kHz WAV); its enrolments go to 8 names shared by all clients (some "
        "valid but unusual: quotes, brackets, NFD accents, CJK), so several clients enrol the "
        "same speaker at once, and a lost enrolment is any accepted utterance missing from "
        "`/speakers` or the SQLite file afterwards. Bad requests: empty, random bytes, torn "
        "and header-only WAV, text and PNG as .wav, a WAV claiming 2 GHz, digital silence, "
        "0.2 s of speech, hostile names (traversal, ANSI escape, reserved, 65 characters, "
        "SQL, RTL override, NUL), a wrong key, deletes of nobody, a 70 KB HTTP header, a 20 KB "
        "file name and a body over the upload limit. The kill -9 cases use the real CLI "
        "(`voxid prepare`, `voxid train crnn`, `voxid serve`). The VAD rows summarise "
        f"bench/results/vad.json (bench/bench_vad.py). Whole run: "
        f"{time.perf_counter() - t0:.0f} s."
    )
    path = write_result("reliability", "Hostile input and misuse (issue #15)", rows, notes=notes)
    print(f"wrote {path}")
    if any(r["pass"] is False for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
