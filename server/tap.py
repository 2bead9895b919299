"""The OpenAI-compatible tap: ``POST /v1/chat/completions`` with ``X-Room``, ``GET /v1/models``.

One upstream request serves the caller (answered as the upstream would) and the room's
viewers (who watch the turn live) at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from aiohttp import web

from .core.codec import dump_json
from .core.errors import ClientError, UpstreamError
from .core.messages import PromptRequest
from .core.sse import SSEEvent
from .core.tap import completion_object, parse_tap_request, relay_data
from .core.types import TurnId, parse_room_name
from .guards import client_address, guard
from .http_api import json_body
from .hub import Room
from .keys import CONFIG, HUB, PROMPT_RATE, UPSTREAM

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
        raise ClientError("bad_request", "the X-Room header must name the room that watches")
    name = parse_room_name(room_name)
    guard(request, config, name, "prompt")
    tap = parse_tap_request(
        await json_body(request),
        default_model=config.upstream.model,
        include_usage=config.upstream.include_usage,
    )
    request.app[PROMPT_RATE].check(client_address(request))
    room = await hub.open(name)
    relay = TapRelay()
    started = await hub.submit(
        room,
        PromptRequest(content=tap.prompt, model=tap.model),
        default_model=config.upstream.model,
        kind="tap",
        body=tap.upstream_body,
        listener=relay,
    )
    log.info("room %s: tap turn %s (stream=%s)", name, started.turn, tap.stream)
    try:
        if tap.stream:
            return await _relay_stream(request, relay, tap.wants_usage)
        return await _complete(relay, room, started.turn)
    finally:
        relay.closed = True


async def _relay_stream(
    request: web.Request, relay: TapRelay, wants_usage: bool
) -> web.StreamResponse:
    kind, item = await relay.queue.get()
    if kind == "error":
        assert isinstance(item, UpstreamError)
        return _upstream_error_response(item)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        while kind == "sse":
            assert isinstance(item, SSEEvent)
            data = relay_data(item.data, wants_usage=wants_usage)
            if data is not None:
                head = f"event: {item.event}\n" if item.event else ""
                lines = "".join(f"data: {line}\n" for line in data.split("\n"))
                await response.write(f"{head}{lines}\n".encode())
            kind, item = await relay.queue.get()
        await response.write_eof()
    except ConnectionError:
        log.info("tap caller went away; the room's turn goes on")
    return response


async def _complete(relay: TapRelay, room: Room, turn_id: TurnId) -> web.Response:
    while True:
        kind, item = await relay.queue.get()
        if kind == "error":
            assert isinstance(item, UpstreamError)
            return _upstream_error_response(item)
        if kind == "end":
            break
    turn = room.state.turn_view(turn_id)  # the room's state now: it may have been reloaded
    if turn is None:
        raise ClientError("unavailable", "the turn was forgotten before it could be answered")
    body = completion_object(turn, completion_id=f"chatcmpl-{turn_id}", created=int(time.time()))
    return web.Response(body=dump_json(body), content_type="application/json")


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    """The upstream's model list, passed through."""
    try:
        status, body = await request.app[UPSTREAM].models()
    except UpstreamError as exc:
        return _upstream_error_response(exc)
    return web.Response(body=body, status=status, content_type="application/json")
