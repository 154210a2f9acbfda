"""ASGI guards: a Host header check against DNS rebinding, a body size limit enforced while
the body streams in, and a last-resort 500 that never shows a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

log = logging.getLogger("voxid.server")

#: Host names every server answers to, whatever it is bound to.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str:
    """The name in a Host header, lower-cased, without port, brackets or a final dot.

    >>> host_name("[::1]:8000"), host_name("LocalHost.:80"), host_name("10.0.0.2")
    ('::1', 'localhost', '10.0.0.2')
    """
    name = header.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        name = name[1:end] if end > 0 else name
    elif name.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        name = name.split(":")[0]
    return name.rstrip(".")


class HostGuardMiddleware:
    """Answer 400 (HTTP) or close the WebSocket before accepting it when the Host header
    names a host this server does not serve.

    A page on evil.example whose DNS name is re-pointed at 127.0.0.1 ("DNS rebinding") is
    same-origin with the local server as far as the browser knows, so CORS and the
    WebSocket Origin check both let it in; only the Host header still says evil.example.
    Allowed: the loopback names, the address the request arrived on (the bound address)
    and `allowed_hosts`; `"*"` among them turns the check off. A request without a Host
    header (HTTP/1.0) is let through: browsers always send one. Starlette's
    TrustedHostMiddleware is not used: it cannot allow the bound address, misreads
    `[::1]:8000` and refuses requests without Host.

    Arguments
    ---------
    app: the ASGI app to wrap.
    allowed_hosts: further host names (or addresses) to answer to.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        names = {host_name(h) for h in allowed_hosts}
        self.allow_any = "*" in names
        self.allowed = LOOPBACK_HOSTS | names

    def allows(self, header: str, scope: Scope) -> bool:
        """Whether a request with Host header `header` (and ASGI `scope`) is served."""
        name = host_name(header)
        bound = scope.get("server")
        return (
            self.allow_any
            or name in self.allowed
            or (bound is not None and bool(bound) and name == bound[0])
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        if header is None or self.allows(header, scope):
            await self.app(scope, receive, send)
            return
        log.warning("refused a request for host %r (not in the allowed hosts)", header)
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).close(code=1008)
            return
        detail = (
            f"Host {header!r} is not served here (a guard against DNS rebinding); allow it "
            "with voxid serve --allowed-host or create_app(allowed_hosts=...)"
        )
        response = JSONResponse({"detail": detail}, status_code=400)
        await response(scope, receive, send)


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
        # A server that answers and closes while the client is still sending makes the
        # client see a connection reset, not the 413: the rest of the body is read and
        # dropped first, up to this much (beyond it, closing is cheaper than listening).
        self.drain_bytes = max(4 * max_bytes, 8_000_000)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            # With "Expect: 100-continue" the client waits for a go-ahead before sending
            # the body, so the 413 can be its answer; otherwise the body is on its way.
            if declared <= self.drain_bytes and not _expects_continue(scope):
                await _drain(receive, self.drain_bytes)
            await _reject(send, self.max_bytes)
            return
        received = 0
        started = False
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            else:
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # Any early answer (413, 401, 422) waits until the client has sent its
                # body; uvicorn stops delivering it once the response is complete.
                if not body_done and received <= self.drain_bytes:
                    await _drain(receive, self.drain_bytes - received)
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


def _expects_continue(scope: Scope) -> bool:
    return any(k == b"expect" and v.strip().lower() == b"100-continue" for k, v in scope["headers"])


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of a request body, at most about `budget` bytes."""
    seen = 0
    while seen <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


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
