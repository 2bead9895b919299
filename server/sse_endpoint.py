"""``GET /api/rooms/{room}/events``: the room's events as Server-Sent Events.

The same fan-out path as the WebSocket (one subscriber, one bounded outbox, one writer) with
SSE framing; ``Last-Event-ID`` resumes exactly as ``epoch``/``since`` do. Read-only.
"""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web

from .core.errors import ClientError
from .core.sse_frames import KEEPALIVE, parse_last_event_id, sse_frame
from .core.types import RoomName, parse_room_name
from .guards import client_address, guard
from .joining import attach
from .keys import CONFIG, CONNECTIONS, HUB, SSE_STREAMS
from .subscriber import Subscriber, connection_subscriber

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # proxies such as nginx must not buffer the stream
    "Connection": "keep-alive",
}


class SSESink:
    """Writes pre-encoded messages to an SSE response, framed with their type and id."""

    __slots__ = ("epoch", "response")

    def __init__(self, response: web.StreamResponse, epoch: str) -> None:
        self.response = response
        self.epoch = epoch.encode()

    async def write(self, data: bytes) -> None:
        """Write one message as an SSE event."""
        await self.response.write(sse_frame(data, self.epoch))

    async def close(self, code: int, reason: str) -> None:
        """End the stream; SSE has no close codes, the client reconnects with Last-Event-ID."""
        log.info("closing an SSE stream (%d %s)", code, reason)
        with contextlib.suppress(ConnectionError):
            await self.response.write_eof()


@routes.get("/api/rooms/{room}/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Subscribe to a room over Server-Sent Events."""
    config = request.app[CONFIG]
    hub = request.app[HUB]
    name = parse_room_name(request.match_info["room"])
    guard(request, config, name, "view")
    header = request.headers.get("Last-Event-ID")
    if header:
        resume = parse_last_event_id(header)
    else:
        resume = parse_last_event_id(request.query.get("last_event_id"), "last_event_id")
    hub.check_capacity(name)
    room = hub.rooms.get(name)
    limit = config.rooms.max_subscribers
    if limit and room is not None and len(room.subscribers) >= limit:
        # SSE has no close codes: refuse up front
        raise ClientError("unavailable", "this room has reached its subscriber limit")
    address = client_address(request)
    if not request.app[CONNECTIONS].acquire(address):
        raise ClientError("unavailable", "too many connections from this address")
    try:
        return await _stream(request, name, resume)
    finally:
        request.app[CONNECTIONS].release(address)


async def _stream(
    request: web.Request, name: RoomName, resume: tuple[str, int] | None
) -> web.StreamResponse:
    config = request.app[CONFIG]
    hub = request.app[HUB]
    response = web.StreamResponse(headers=HEADERS)
    await response.prepare(request)
    sink = SSESink(response, "")
    # With the transport, bytes stuck in the socket count against the outbox limit and a
    # stalled reader is dropped, exactly as on the WebSocket.
    sub = connection_subscriber(sink, config.limits, request.transport)
    try:
        room = await hub.open(name)
        sink.epoch = room.state.epoch.encode()
        attach(hub, room, sub, resume, "viewer")
    except ClientError as exc:
        log.info("SSE subscriber refused: %s", exc.code)
        return response
    streams = request.app[SSE_STREAMS]
    streams.add(sub)
    sub.start()
    try:
        await _keep_alive(response, sub, config.server.sse_keepalive_seconds)
    finally:
        streams.discard(sub)
        hub.leave(room, sub)
        await sub.stop(0.0)
    return response


async def _keep_alive(response: web.StreamResponse, sub: Subscriber, every: float) -> None:
    """Send a comment line when idle until the stream ends or the client goes away."""
    while not await sub.wait_ended(every or None):
        if not len(sub.outbox):
            try:
                await response.write(KEEPALIVE)
            except ConnectionError:
                return
