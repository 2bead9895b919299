"""The WebSocket endpoint ``GET /api/rooms/{room}/ws`` (PROTOCOL.md, "WebSocket")."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from .core.codec import decode_client_frame
from .core.errors import ClientError
from .core.messages import CancelRequest, ErrorFrame
from .core.types import parse_room_name
from .core.wsframe import FrameOnce
from .hub import Hub, Room
from .joining import attach, send_one
from .keys import CONFIG, HUB, SOCKETS
from .subscriber import Subscriber, connection_subscriber

log = logging.getLogger(__name__)

TOO_MANY_BAD_FRAMES = 4502
CAPACITY = 1013
CLOSE_WAIT_SECONDS = 5.0


class WebSocketSink:
    """Writes pre-encoded frames to an aiohttp WebSocket."""

    __slots__ = ("transport", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None = None
    ) -> None:
        self.ws = ws
        self.transport = transport

    async def write(self, data: bytes) -> None:
        """Send one text frame of already encoded JSON."""
        await self.ws.send_frame(data, WSMsgType.TEXT)

    def write_now(self, data: bytes) -> None:
        """Write one text frame straight to the transport, framed once per event.

        For a subscriber that keeps up (nothing queued or buffered): no task wakes for it.
        Nothing is written once our close frame went out or the connection is going.
        """
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self.ws.closed:
            transport.write(_FRAMES.frame(data))

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``."""
        await self.ws.close(code=code, message=reason.encode())


_FRAMES = FrameOnce()  # every subscriber of an event gets the same frame bytes


def resume_point(query: dict[str, str]) -> tuple[str, int] | None:
    """``epoch``/``since`` of the URL, when both are given.

    Raises:
        ClientError: ``bad_request`` when ``since`` is not a non-negative integer.
    """
    epoch, since = query.get("epoch"), query.get("since")
    if epoch is None or since is None:
        return None
    if not since.isdigit():
        raise ClientError("bad_request", "'since' must be a non-negative integer")
    return epoch, int(since)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """Join a room: welcome, snapshot or replay, then live events; read client frames."""
    config = request.app[CONFIG]
    hub = request.app[HUB]
    name = parse_room_name(request.match_info["room"])
    resume = resume_point(dict(request.query))
    room = hub.room(name)
    if config.rooms.max_subscribers and len(room.subscribers) >= config.rooms.max_subscribers:
        raise ClientError("unavailable", "this room has reached its subscriber limit")
    heartbeat = config.server.heartbeat_seconds or None
    ws = web.WebSocketResponse(
        max_msg_size=config.limits.max_frame_bytes, compress=False, heartbeat=heartbeat
    )
    await ws.prepare(request)
    sink = WebSocketSink(ws, request.transport)
    sub = connection_subscriber(sink, config.limits, request.transport, write_now=sink.write_now)
    try:
        room = attach(hub, name, sub, resume, "publisher")
    except ClientError:
        await ws.close(code=CAPACITY, message=b"server at capacity")
        return ws
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    writer = asyncio.create_task(sub.run(), name="ws-writer")
    try:
        await _read_frames(
            ws,
            hub,
            room,
            sub,
            config.limits.max_prompt_chars,
            config.limits.max_bad_frames,
            config.upstream.model,
        )
    finally:
        sockets.discard(ws)
        hub.leave(room, sub)
        if sub.closing:
            # Let the writer deliver what is queued (an error frame) and the close code.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), CLOSE_WAIT_SECONDS)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    return ws


async def _read_frames(
    ws: web.WebSocketResponse,
    hub: Hub,
    room: Room,
    sub: Subscriber,
    max_prompt_chars: int,
    max_bad_frames: int,
    default_model: str,
) -> None:
    bad = 0
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            log.info("room %s: binary frame, closing 1003", room.state.name)
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
            return
        if msg.type != WSMsgType.TEXT:
            continue
        try:
            frame = decode_client_frame(msg.data, max_prompt_chars=max_prompt_chars)
        except ClientError as exc:
            _refuse(sub, room, exc)
            bad += 1
            if max_bad_frames and bad >= max_bad_frames:
                log.info("room %s: %d bad frames, closing 4502", room.state.name, bad)
                sub.close(TOO_MANY_BAD_FRAMES, "too many bad frames")
                return
            continue
        try:
            if isinstance(frame, CancelRequest):
                hub.cancel(room, frame.turn)
            else:
                hub.submit(room, frame, default_model=default_model)
        except ClientError as exc:
            exc.ref = exc.ref or frame.id
            _refuse(sub, room, exc)


def _refuse(sub: Subscriber, room: Room, exc: ClientError) -> None:
    log.info("room %s: frame refused: %s (%s)", room.state.name, exc.code, exc.message)
    send_one(sub, ErrorFrame(exc.code, exc.message, exc.temporary, exc.retry_after_ms, exc.ref))
