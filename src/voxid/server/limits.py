"""ASGI guards: a body size limit enforced while the body streams in, and a last-resort
500 that never shows a traceback."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("voxid.server")


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a request body passes the limit.

    An HTTPException on purpose: FastAPI turns any other error raised while it parses a
    form into a generic 400, but lets HTTPException through, so the client gets the 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the upload limit of {limit / 1e6:g} MB")


class BodyLimitMiddleware:
    """Answer 413 for bodies over `max_bytes`: at once when Content-Length says so,
    otherwise as soon as the streamed byte count passes the limit (chunked uploads).

    Arguments
    ---------
    app: the ASGI app to wrap.
    max_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _reject(send, self.max_bytes)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # Raised outside any route (e.g. by a middleware reading the body).
            if started:
                raise
            await _reject(send, self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reject(send: Send, limit: int) -> None:
    exc = BodyTooLarge(limit)
    response = JSONResponse(
        {"detail": exc.detail}, status_code=413, headers={"Connection": "close"}
    )
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Any:  # a response never reads the request
    return {"type": "http.disconnect"}


class InternalErrorMiddleware:
    """Turn any unhandled exception into a bare 500 and log the traceback server-side.

    Starlette's own handler re-raises after answering, and uvicorn then drops the
    connection, so a client may see a reset instead of the 500; catching here ends it.

    Arguments
    ---------
    app: the ASGI app to wrap.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error(
                "unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc
            )
            if started:
                return  # the status is out already; all that is left is to end it
            response = JSONResponse({"detail": "internal server error"}, status_code=500)
            await response(scope, receive, send)
