"""``GET /api/rooms/{room}/events``: the room's events as Server-Sent Events.

The same fan-out path as the WebSocket (one subscriber, one bounded outbox, one writer) with
SSE framing; ``Last-Event-ID`` resumes exactly as ``epoch``/``since`` do. Read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from server.core.auth_rules import Claims
from server.core.codes import CloseCode, ErrorCode
from server.core.errors import ClientError
from server.core.messages import ErrorFrame
from server.core.sse_frames import KEEPALIVE, parse_last_event_id, sse_frame
from server.core.types import RoomName, parse_room_name
from server.http.admission import enter_room
from server.http.guards import client_address, guard
from server.http.joining import attach, send_one
from server.http.keys import CONFIG, CONNECTIONS, HUB, ROOM_BUDGET, SSE_STREAMS
from server.rooms.subscriber import Subscriber, connection_subscriber

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

    async def close(self, code: CloseCode, reason: str) -> None:
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
    caller = guard(request, config, name, "view")
    header = request.headers.get("Last-Event-ID")
    if header:
        resume = parse_last_event_id(header)
    else:
        resume = parse_last_event_id(request.query.get("last_event_id"), "last_event_id")
    enter_room(hub, request.app[ROOM_BUDGET], name, caller.principal)
    room = hub.rooms.get(name)
    limit = config.rooms.max_subscribers
    if limit and room is not None and len(room.subscribers) >= limit:
        # SSE has no close codes: refuse up front
        raise ClientError(ErrorCode.UNAVAILABLE, "this room has reached its subscriber limit")
    address = client_address(request)
    if not request.app[CONNECTIONS].acquire(address):
        # SSE has no 4503: the same 503 as a full room, before the stream starts
        raise ClientError(ErrorCode.UNAVAILABLE, "too many connections from this address")
    try:
        return await _stream(request, name, resume, caller.claims)
    finally:
        request.app[CONNECTIONS].release(address)


def _expire(sub: Subscriber) -> None:
    """The token expired: an ``unauthorized`` error event, then the end of the stream.

    It is the WebSocket's 4500; an EventSource reconnects, and a new request needs a new token.
    """
    send_one(sub, ErrorFrame(ErrorCode.UNAUTHORIZED, "the token has expired"))
    sub.close(CloseCode.UNAUTHORIZED, "token expired")


async def _stream(
    request: web.Request,
    name: RoomName,
    resume: tuple[str, int] | None,
    claims: Claims | None,
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
    except Exception:
        log.exception("room %s: an SSE join failed", name)
        return response
    streams = request.app[SSE_STREAMS]
    streams.add(sub)
    sub.start()
    expiry = None
    if claims is not None:
        delay = max(0.0, claims.exp - time.time())
        expiry = asyncio.get_running_loop().call_later(delay, _expire, sub)
    try:
        await _keep_alive(
            response,
            request.transport,
            sub,
            config.server.sse_keepalive_seconds,
            config.server.sse_write_timeout_seconds,
        )
    finally:
        if expiry is not None:
            expiry.cancel()
        streams.discard(sub)
        hub.leave(room, sub)
        await sub.stop(0.0)
    return response


async def _keep_alive(
    response: web.StreamResponse,
    transport: asyncio.Transport | None,
    sub: Subscriber,
    every: float,
    timeout: float,
) -> None:
    """Send a comment line every ``every`` seconds until the stream ends or the client goes away.

    A keep-alive that cannot be written in ``timeout`` seconds (its socket took nothing meanwhile)
    drops the stream: the client stopped reading.
    """
    loop = asyncio.get_running_loop()
    closing_since: float | None = None
    while not await sub.wait_ended(every or None):
        if sub.closing:
            # Its end is being written: no keep-alive after (or beside) it. An end that does
            # not get out within the timeout means the reader stopped reading.
            closing_since = closing_since or loop.time()
            if loop.time() - closing_since >= timeout:
                log.info("an SSE stream's end was not taken in %.1f s; dropping it", timeout)
                if transport is not None:
                    transport.abort()
                return
            continue
        try:
            if not await _written_within(response, transport, KEEPALIVE, timeout):
                log.info("an SSE keep-alive was not taken in %.1f s; dropping the stream", timeout)
                sub.close(CloseCode.SLOW_CONSUMER, "stopped reading")
                if transport is not None:
                    transport.abort()
                return
        except ConnectionError:
            return


async def _written_within(
    response: web.StreamResponse,
    transport: asyncio.Transport | None,
    data: bytes,
    timeout: float,
) -> bool:
    """Write ``data`` and wait until the socket has taken everything before it and it.

    False when the socket took nothing for ``timeout`` seconds meanwhile (a reader that is slow but
    reading keeps its stream: any progress restarts the clock).

    Raises:
        ConnectionError: the client went away.
    """
    write = asyncio.ensure_future(response.write(data))
    try:
        if transport is None:
            await write
            return True
        loop = asyncio.get_running_loop()
        since, level = loop.time(), -1
        while True:
            if not write.done():
                await asyncio.wait((write,), timeout=timeout / 4)
            if write.done():
                write.result()
                if not transport.get_write_buffer_size():
                    return True
                # Handed over but not sent yet: the transport has no event for "it took some
                # bytes", so look again in a while.
                await asyncio.sleep(timeout / 4)
            buffered = transport.get_write_buffer_size()
            if 0 <= buffered < level:
                since = loop.time()  # the reader took something
            level = buffered
            if loop.time() - since >= timeout:
                return False
    finally:
        if not write.done():
            write.add_done_callback(_forget)  # it fails once the stream is dropped


def _forget(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
