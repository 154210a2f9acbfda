"""`/ws/live`: live identification over a WebSocket.

Protocol: the client sends binary frames of 16-bit little-endian mono PCM at 16 kHz (or
the rate given as `?sample_rate=`); the server answers with JSON text messages:
`{"type": "ready", ...}` once, then `{"type": "decision", ...}` (a `stream.Decision`)
about every hop, and `{"type": "error", "message": ...}` for a problem that does not end
the stream (such as nobody being enrolled yet). When the model falls behind, older windows
are dropped so the answer stays about *now* (`dropped` counts them).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from voxid.card import DEFAULT_SAMPLE_RATE
from voxid.errors import VoxidError
from voxid.stream import LiveIdentifier, StreamConfig

router = APIRouter()

#: Live sessions at once: they all share the inference workers.
MAX_SESSIONS = 8
#: The largest frame accepted: 2 s of 48 kHz audio; live clients send about 0.1 s.
MAX_FRAME_BYTES = 2 * 48000 * 2


def _origin_allowed(websocket: WebSocket, allowed: set[str]) -> bool:
    """Non-browser clients send no Origin; browsers must come from this server's own page
    or from an origin allowed through CORS."""
    origin = websocket.headers.get("origin")
    if origin is None or origin in allowed:
        return True
    host = websocket.headers.get("host", "")
    return urlsplit(origin).netloc == host


@router.websocket("/ws/live")
async def live(websocket: WebSocket) -> None:
    """Stream PCM in, decisions out (see the module docstring for the protocol)."""
    service = websocket.app.state.service
    if not _origin_allowed(websocket, service.allowed_origins):
        # WebSockets are not covered by CORS: without this, any web page open in the
        # user's browser could stream to a local server.
        await websocket.close(code=1008)
        return
    if service.live_sessions >= MAX_SESSIONS:
        await websocket.close(code=1013, reason="too many live sessions; try again later")
        return
    await websocket.accept()
    service.live_sessions += 1
    try:
        await _serve(websocket, service)
    finally:
        service.live_sessions -= 1


async def _serve(websocket: WebSocket, service: Any) -> None:
    try:
        sample_rate = int(websocket.query_params.get("sample_rate", str(DEFAULT_SAMPLE_RATE)))
        if not 8000 <= sample_rate <= 48000:
            raise ValueError
    except ValueError:
        await websocket.send_json(
            {"type": "error", "message": "sample_rate: must be an integer in [8000, 48000]"}
        )
        await websocket.close(code=1003)
        return
    config = StreamConfig()
    ident = LiveIdentifier(service.recognizer, config, sample_rate=sample_rate)
    await websocket.send_json(
        {
            "type": "ready",
            "sample_rate": sample_rate,
            "window_s": config.window_s,
            "hop_s": config.hop_s,
        }
    )
    dropped = 0
    last_error = None
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                continue  # text frames carry nothing the server needs
            if len(data) > MAX_FRAME_BYTES or len(data) % 2:
                await websocket.send_json(
                    {
                        "type": "error",
                        "message": f"frames must be 16-bit PCM, at most {MAX_FRAME_BYTES} bytes",
                    }
                )
                await websocket.close(code=1009)
                return
            windows = ident.push(np.frombuffer(data, dtype="<i2"))
            if not windows:
                continue
            dropped += len(windows) - 1
            try:
                decision = await service.run(ident.decide, windows[-1])
            except VoxidError as exc:
                # Repeat an error only when it changes, or the page would be flooded.
                if str(exc) != last_error:
                    await websocket.send_json({"type": "error", "message": str(exc)})
                last_error = str(exc)
                continue
            last_error = None
            await websocket.send_json(
                {"type": "decision", "dropped": dropped, **decision.to_dict()}
            )
    except WebSocketDisconnect:
        return
