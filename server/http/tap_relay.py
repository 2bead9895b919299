"""What the tap's endpoints share: starting a tap turn, hearing it, and answering the caller.

A tap turn's runner tells a ``TapRelay`` each upstream event the room took; the endpoint
reads them from its queue and writes its caller's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Literal

from aiohttp import web

from server.core.codec import dump_json
from server.core.codes import ErrorCode
from server.core.errors import ClientError, UpstreamError
from server.core.messages import PromptRequest
from server.core.room import TurnStarted
from server.core.sse import SSEEvent
from server.core.tap import TapFailure, TapRequest
from server.core.types import RoomName, UpstreamApi, parse_room_name
from server.http.admission import enter_room
from server.http.guards import guard
from server.http.keys import CONFIG, HUB, PROMPTS, ROOM_BUDGET
from server.rooms.room import Room

log = logging.getLogger(__name__)

Item = (
    tuple[Literal["sse"], SSEEvent]
    | tuple[Literal["error"], UpstreamError]
    | tuple[Literal["end"], None]
)


class TapRelay:
    """A TurnListener that queues the upstream's events for the tap's caller."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.closed = False

    def on_sse(self, event: SSEEvent) -> None:
        """Queue one upstream event."""
        if not self.closed:
            self.queue.put_nowait(("sse", event))

    def on_error(self, error: UpstreamError) -> None:
        """Queue the upstream's failure."""
        if not self.closed:
            self.queue.put_nowait(("error", error))

    def on_end(self) -> None:
        """Queue the end of the turn."""
        if not self.closed:
            self.queue.put_nowait(("end", None))


def tap_room(request: web.Request) -> tuple[RoomName, str]:
    """The room the ``X-Room`` header names and the caller's principal, once guarded.

    Raises:
        ClientError: ``bad_request`` without the header or with a bad room name; whatever
            the guard refuses (auth, Origin).
    """
    room_name = request.headers.get("X-Room")
    if not room_name:
        raise ClientError(
            ErrorCode.BAD_REQUEST, "the X-Room header must name the room that watches"
        )
    name = parse_room_name(room_name)
    caller = guard(request, request.app[CONFIG], name, "prompt")
    return name, caller.principal


async def start_tap_turn(
    request: web.Request, name: RoomName, principal: str, tap: TapRequest, api: UpstreamApi
) -> tuple[Room, TapRelay, TurnStarted]:
    """Start the tap turn in the room, its upstream speaking ``api``; a relay hears it.

    Raises:
        ClientError: over a budget, at the room limit, ``turn_in_progress``, ...
    """
    config = request.app[CONFIG]
    hub = request.app[HUB]
    enter_room(hub, request.app[ROOM_BUDGET], name, principal)
    room = await hub.open(name)
    relay = TapRelay()
    started = await request.app[PROMPTS].submit(
        hub,
        room,
        PromptRequest(content=tap.prompt, model=tap.model),
        principal,
        default_model=config.upstream.model,
        kind="tap",
        body=tap.upstream_body,
        listener=relay,
        api=api,
    )
    log.info("room %s: tap turn %s (%s, stream=%s)", name, started.turn, api, tap.stream)
    return room, relay, started


def upstream_error_response(error: UpstreamError) -> web.Response:
    """The upstream's status and scrubbed error JSON, as the upstream sent them."""
    payload = error.payload or {"error": {"message": error.message, "code": error.code}}
    status = error.status if error.status and error.status >= 400 else 502
    headers = {}
    if error.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after_ms / 1000)))
    return web.Response(
        body=dump_json(payload), status=status, content_type="application/json", headers=headers
    )


def failure_response(failure: TapFailure) -> web.Response:
    """The error JSON of a turn that did not complete, with its status."""
    return json_response(failure.status, failure.body())


def json_response(status: int, body: Any) -> web.Response:
    """One JSON answer."""
    return web.Response(body=dump_json(body), status=status, content_type="application/json")


def sse_bytes(event: str | None, data: str) -> bytes:
    """One server-sent event: its ``event:`` line when named, ``data:`` lines, a blank line."""
    head = f"event: {event}\n" if event else ""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}{lines}\n".encode()


async def write_within(request: web.Request, write: Awaitable[None], timeout: float) -> None:
    """Write to the caller.

    A caller whose socket takes nothing for ``timeout`` seconds stopped reading: its connection is
    dropped (SSE streams get the same rule).

    Raises:
        ConnectionError: the caller went away or stopped reading.
    """
    try:
        await asyncio.wait_for(write, timeout)
    except TimeoutError:
        log.info("a tap caller took nothing for %.1f s; dropping its stream", timeout)
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("the tap caller stopped reading") from None


def sse_response() -> web.StreamResponse:
    """The caller's event stream, not yet prepared."""
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
