"""The voxid web service: a FastAPI app around one `Recognizer`.

Model inference is CPU-bound and the recognizer (its torch model and its SQLite registry)
is not meant for concurrent use, so every call into it runs on one dedicated worker
thread; the event loop only parses requests, decodes audio in the default threadpool (at
most `workers` uploads at a time) and answers, so `/health` and the WebSocket stay
responsive while a model runs.

Security defaults: mutating endpoints (enrol, delete) need the `X-API-Key` header; with no
key configured they are refused with 401 (the `voxid serve` command generates and prints a
key when none is given). CORS is off unless origins are listed. A Host header that names
neither a loopback name, the bound address nor an allowed host gets 400 (WebSockets are
closed unaccepted), so a DNS-rebound page cannot reach the server. Bodies over the upload
limit get 413 while they stream in. No traceback ever reaches a client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from voxid.audio import AudioError
from voxid.errors import (
    ConfigError,
    ModelError,
    ModelMismatch,
    NoSpeakersEnrolled,
    RegistryError,
    RegistryUnavailable,
    UnknownSpeaker,
    VoxidError,
    require_positive,
)
from voxid.server.limits import (
    BodyLimitMiddleware,
    HostGuardMiddleware,
    InternalErrorMiddleware,
)
from voxid.server.service import Service

STATIC = Path(__file__).resolve().parent / "static"


#: The HTTP status of each error class; an error gets the status of the nearest class in
#: its MRO that is listed. Chosen by class alone, never by the message: the message is for
#: people and may change. A model mismatch is 409 like nobody enrolled: the request is
#: well-formed, it conflicts with what the server holds (a registry of another model's
#: voices), and only the operator can resolve it (re-enrol, another registry).
ERROR_STATUS: dict[type[VoxidError], int] = {
    UnknownSpeaker: 404,
    NoSpeakersEnrolled: 409,
    ModelMismatch: 409,
    RegistryUnavailable: 503,
    RegistryError: 409,
    AudioError: 422,
    ConfigError: 422,
    ModelError: 422,
    VoxidError: 400,
}


def error_status(exc: VoxidError) -> int:
    """The HTTP status for a user-facing voxid error, from `ERROR_STATUS`.

    >>> error_status(UnknownSpeaker("anything at all"))
    404
    >>> error_status(ModelMismatch("speakers.db: enrolled with another model"))
    409
    """
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 400


def create_app(
    recognizer: Any,
    *,
    api_key: str | None = None,
    max_upload_mb: float = 20.0,
    cors_origins: list[str] | None = None,
    max_audio_seconds: float = 120.0,
    workers: int = 1,
    allowed_hosts: list[str] | None = None,
) -> FastAPI:
    """Build the service around a loaded recognizer.

    Arguments
    ---------
    recognizer: a `voxid.inference.recognizer.Recognizer` (torch or ONNX backend) with its registry.
    api_key: the key the `X-API-Key` header must carry for enrol and delete; None refuses
        every mutation with 401.
    max_upload_mb: the largest request body accepted (413 beyond it).
    cors_origins: origins allowed by CORS; None or empty keeps CORS off.
    max_audio_seconds: the longest decoded upload accepted.
    workers: model calls run at once (load the recognizer with `threads=1` to match).
    allowed_hosts: host names the Host header may carry besides localhost, 127.0.0.1, ::1
        and the address the server is bound to (others get 400); `["*"]` allows any.
    """
    require_positive("max_upload_mb", max_upload_mb)
    from voxid import __version__
    from voxid.server.diarize_route import router as diarize_router
    from voxid.server.live import router as live_router
    from voxid.server.routes import router

    service = Service(
        recognizer,
        api_key,
        int(max_upload_mb * 1e6),
        max_audio_seconds,
        set(cors_origins or ()),
        workers=workers,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        service.executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        lifespan=lifespan,
        title="voxid",
        version=__version__,
        description="Speaker enrolment, verification and identification. Enrol and delete "
        "need the `X-API-Key` header. Live identification: WebSocket "
        "`/ws/live` (16 kHz mono 16-bit PCM frames in, JSON decisions out).",
    )
    app.state.service = service
    app.include_router(router)
    app.include_router(live_router)
    app.include_router(diarize_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        # The page uses only its own files: nothing may load from elsewhere.
        return FileResponse(
            STATIC / "index.html",
            headers={
                "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                "img-src 'self' data:; media-src 'self' blob:",
                "Cache-Control": "no-cache",
            },
        )

    _install_error_handlers(app)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=service.max_upload_bytes)
    app.add_middleware(InternalErrorMiddleware)  # catches everything inside it
    # Outermost: a request for a foreign host must reach nothing, not even the 500 path.
    app.add_middleware(HostGuardMiddleware, allowed_hosts=allowed_hosts or ())

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoxidError)
    async def voxid_error(request: Request, exc: VoxidError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=error_status(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg"))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)
