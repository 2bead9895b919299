"""The OpenAI-compatible tap: ``POST /v1/chat/completions`` with ``X-Room``, ``GET /v1/models``.

One upstream request serves the caller (answered as the upstream would) and the room's
viewers (who watch the turn live) at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Literal

from aiohttp import web

from server.core.codec import dump_json
from server.core.codes import ErrorCode
from server.core.errors import ClientError, UpstreamError
from server.core.messages import PromptRequest
from server.core.sse import SSEEvent
from server.core.tap import (
    TapFailure,
    completion_object,
    parse_tap_request,
    relay_data,
    tap_failure,
)
from server.core.types import TurnId, parse_room_name
from server.http.admission import enter_room
from server.http.api import json_body
from server.http.guards import guard
from server.http.keys import CONFIG, HUB, PROMPTS, ROOM_BUDGET, UPSTREAM
from server.rooms.room import Room

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

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


def _upstream_error_response(error: UpstreamError) -> web.Response:
    """The upstream's status and scrubbed error JSON, as the upstream sent them."""
    payload = error.payload or {"error": {"message": error.message, "code": error.code}}
    status = error.status if error.status and error.status >= 400 else 502
    headers = {}
    if error.retry_after_ms is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after_ms / 1000)))
    return web.Response(
        body=dump_json(payload), status=status, content_type="application/json", headers=headers
    )


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Relay one upstream chat completion to the caller while the room watches it."""
    config = request.app[CONFIG]
    hub = request.app[HUB]
    room_name = request.headers.get("X-Room")
    if not room_name:
        raise ClientError(
            ErrorCode.BAD_REQUEST, "the X-Room header must name the room that watches"
        )
    name = parse_room_name(room_name)
    caller = guard(request, config, name, "prompt")
    tap = parse_tap_request(
        await json_body(request),
        default_model=config.upstream.model,
        include_usage=config.upstream.include_usage,
        max_prompt_chars=config.limits.max_prompt_chars,
    )
    enter_room(hub, request.app[ROOM_BUDGET], name, caller.principal)
    room = await hub.open(name)
    relay = TapRelay()
    started = await request.app[PROMPTS].submit(
        hub,
        room,
        PromptRequest(content=tap.prompt, model=tap.model),
        caller.principal,
        default_model=config.upstream.model,
        kind="tap",
        body=tap.upstream_body,
        listener=relay,
    )
    log.info("room %s: tap turn %s (stream=%s)", name, started.turn, tap.stream)
    try:
        if tap.stream:
            timeout = config.server.sse_write_timeout_seconds
            return await _relay_stream(request, relay, room, started.turn, tap.wants_usage, timeout)
        return await _complete(relay, room, started.turn)
    finally:
        relay.closed = True


def _failure_response(failure: TapFailure) -> web.Response:
    return web.Response(
        body=dump_json(failure.body()), status=failure.status, content_type="application/json"
    )


def _sse(event: str | None, data: str) -> bytes:
    head = f"event: {event}\n" if event else ""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}{lines}\n".encode()


async def _write(request: web.Request, write: Awaitable[None], timeout: float) -> None:
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


async def _relay_stream(
    request: web.Request,
    relay: TapRelay,
    room: Room,
    turn_id: TurnId,
    wants_usage: bool,
    timeout: float,
) -> web.StreamResponse:
    """Relay the upstream's events; the status line waits for the first one to pass on.

    So a turn that fails before anything reached the caller is a non-2xx with the error JSON.
    The relay gets only the events the room's turn took and went on after (never the one that
    ended it, never any after it), and ``[DONE]`` is held back until the turn's outcome is
    known: after a failure or truncation the stream ends with the turn's own scrubbed
    ``{"error": ...}`` data line instead, which the SDKs raise on.
    """
    response: web.StreamResponse | None = None
    try:
        while (item := await relay.queue.get())[0] != "end":
            if item[0] == "error":
                if response is None:
                    return _upstream_error_response(item[1])
                continue  # the turn's end says how it failed
            sse = item[1]
            data = relay_data(sse.data, wants_usage=wants_usage)
            if data is None:
                continue
            if response is None:
                response = _sse_response()
                await response.prepare(request)
            await _write(request, response.write(_sse(sse.event, data)), timeout)
        failure = tap_failure(room.state.turn_view(turn_id))
        if failure is not None and response is None:
            return _failure_response(failure)
        if response is None:
            response = _sse_response()
            await response.prepare(request)
        if failure is None:
            await _write(request, response.write(b"data: [DONE]\n\n"), timeout)
        else:
            await _write(
                request, response.write(_sse(None, dump_json(failure.body()).decode())), timeout
            )
        await _write(request, response.write_eof(), timeout)
    except ConnectionError:
        log.info("tap caller went away or stopped reading; the room's turn goes on")
    assert response is not None  # a connection error comes from prepare or a write
    return response


def _sse_response() -> web.StreamResponse:
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )


async def _complete(relay: TapRelay, room: Room, turn_id: TurnId) -> web.Response:
    """One ``chat.completion`` once the turn completed, else the error JSON with its status."""
    while (item := await relay.queue.get())[0] != "end":
        if item[0] == "error":
            return _upstream_error_response(item[1])
    turn = room.state.turn_view(turn_id)  # the room's state now: it may have been reloaded
    failure = tap_failure(turn)
    if failure is not None:
        return _failure_response(failure)
    assert turn is not None  # tap_failure reports a forgotten turn
    body = completion_object(turn, completion_id=f"chatcmpl-{turn_id}", created=int(time.time()))
    return web.Response(body=dump_json(body), content_type="application/json")


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    """The upstream's model list, passed through.

    In token mode, under the tap's token rules: a token that may prompt, in the ``X-Room``
    room when the header is there.
    """
    room = request.headers.get("X-Room")
    guard(request, request.app[CONFIG], parse_room_name(room) if room else None, "prompt")
    try:
        status, body = await request.app[UPSTREAM].models()
    except UpstreamError as exc:
        return _upstream_error_response(exc)
    return web.Response(body=body, status=status, content_type="application/json")
