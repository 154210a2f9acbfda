"""`voxid serve` (the web service and page) and `voxid listen` (live identification)."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

#: One thread per model call by default: a call split over cores waits at every layer for
#: its slowest thread, and with the event loop, decoding and other processes sharing the
#: cores that thread is often descheduled (BENCHMARKS.md, service notes). A
#: server gets its parallelism from several calls at once (`--workers`) instead.
THREADS_HELP = "Threads per model call, torch and ONNX Runtime (0 = the library's default)."
WORKERS_HELP = "Model calls served at once, one thread each by default (default: the cores)."


def _set_threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def serve(
    model: Annotated[
        str,
        typer.Argument(
            help="Run folder, model.pt or .onnx file, or a shipped model (voxid models)."
        ),
    ] = "base",
    registry: Annotated[
        str, typer.Option(help="Speaker registry: a SQLite file or postgresql://user@host/db.")
    ] = "speakers.db",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="VOXID_API_KEY",
            show_envvar=True,
            help="Key for enrol/delete (X-API-Key header). Generated and printed when absent.",
        ),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest request body (413 beyond).", min=0.01)
    ] = 20.0,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="Allow this origin through CORS (repeatable; off by default)."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Also answer requests whose Host header names this host (repeatable; '*' "
            "allows any). localhost, 127.0.0.1, ::1 and --host are always allowed; others get "
            "400, against DNS rebinding.",
        ),
    ] = None,
    threads: Annotated[int, typer.Option(help=THREADS_HELP, min=0)] = 1,
    workers: Annotated[int | None, typer.Option(help=WORKERS_HELP, min=1)] = None,
) -> None:
    """Serve enrol/verify/identify over HTTP, the web page at / and live mode at /ws/live."""
    import uvicorn

    from voxid.inference.backends import usable_cores
    from voxid.inference.recognizer import Recognizer
    from voxid.server import create_app

    _set_threads(threads)
    recognizer = Recognizer.load(model, registry=registry, threads=threads or None)
    recognizer.warn_open_set()
    if not api_key:
        # Safe by default and still usable: a fresh key each start, shown only to the
        # person who started the server.
        api_key = secrets.token_urlsafe(18)
        print(f"voxid: enrol/delete API key (X-API-Key): {api_key}", file=sys.stderr, flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"voxid: warning: listening on {host}: reachable beyond this machine; put TLS "
            "in front of it",
            file=sys.stderr,
        )
    app = create_app(
        recognizer,
        api_key=api_key,
        max_upload_mb=max_upload_mb,
        cors_origins=cors_origin or None,
        workers=workers or usable_cores(),
        # A wildcard bind is no name a browser sends; the address each request arrived on
        # is allowed by the app itself.
        allowed_hosts=[*(allowed_host or ()), *([host] if host not in ("0.0.0.0", "::") else [])],
    )
    from voxid.inference.registry import is_url, redact

    shown = redact(registry) if is_url(registry) else registry  # never print a password
    print(
        f"voxid: serving {model} on http://{host}:{port}/ (registry {shown})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


def listen(
    model: Annotated[
        str,
        typer.Argument(
            help="Run folder, model.pt or .onnx file, or a shipped model (voxid models)."
        ),
    ] = "base",
    registry: Annotated[
        str, typer.Option(help="Speaker registry: a SQLite file or postgresql://user@host/db.")
    ] = "speakers.db",
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Play this file instead of the microphone.")
    ] = None,
    fast: Annotated[bool, typer.Option(help="With --input: no real-time pacing.")] = False,
    device: Annotated[str | None, typer.Option(help="Input device (name or index).")] = None,
    window: Annotated[float, typer.Option(help="Window length, seconds.")] = 1.5,
    hop: Annotated[float, typer.Option(help="Time between decisions, seconds.")] = 0.5,
    smoothing: Annotated[int, typer.Option(help="Decisions in the majority vote.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    threads: Annotated[int, typer.Option(help=THREADS_HELP, min=0)] = 1,
) -> None:
    """Say who is speaking, live, from the microphone or a file; Ctrl-C stops."""
    import signal
    import time

    from voxid.inference.recognizer import Recognizer
    from voxid.stream import (
        LiveIdentifier,
        StreamConfig,
        file_blocks,
        microphone_blocks,
        run_stream,
    )

    # A shell starts background jobs with SIGINT ignored, and children inherit that; Ctrl-C
    # (or `kill -INT` from a supervisor) must still end the stream cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _set_threads(threads)
    config = StreamConfig(window_s=window, hop_s=hop, smoothing=smoothing)
    recognizer = Recognizer.load(model, registry=registry, threads=threads or None)
    if not recognizer.speakers():
        from voxid.errors import NoSpeakersEnrolled

        # Identify has nobody to compare with: say so now, not at the first word.
        raise NoSpeakersEnrolled(
            f"no speakers enrolled in {registry}: enrol someone first (voxid enroll NAME FILES)"
        )
    rate = recognizer.sample_rate  # the model's: no resampling between source and model
    ident = LiveIdentifier(recognizer, config, sample_rate=rate)
    if input is not None:
        blocks = file_blocks(input, rate, realtime=not fast)
        source = str(input)
    else:
        dev = int(device) if device is not None and device.isdigit() else device
        blocks = microphone_blocks(rate, device=dev)
        source = "microphone"
    print(
        f"voxid: listening to {source} (window {window} s, hop {hop} s); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    latencies: list[float] = []

    def show(decision) -> None:
        latencies.append(decision.latency_ms)
        print(json.dumps(decision.to_dict()) if as_json else decision.line(), flush=True)

    start = time.perf_counter()
    stopped = False
    try:
        run_stream(ident, blocks, show)
    except KeyboardInterrupt:
        stopped = True
    finally:
        blocks.close()  # releases the audio device at once
    elapsed = time.perf_counter() - start
    if input is not None and not stopped and not latencies:
        from voxid.audio import audio_info
        from voxid.errors import DataError, printable

        seconds = audio_info(input).duration
        raise DataError(
            f"{printable(input)}: {seconds:.2f} s of audio is shorter than one window "
            f"({window:g} s): no decision; give a longer clip or a shorter --window"
        )
    summary = f"{len(latencies)} decisions in {elapsed:.1f} s"
    if latencies:
        summary += f", median latency {sorted(latencies)[len(latencies) // 2]:.1f} ms"
    print(f"voxid: {'stopped' if stopped else 'done'}: {summary}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add `serve` and `listen` to the voxid app."""
    app.command()(serve)
    app.command()(listen)
