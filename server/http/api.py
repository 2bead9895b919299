"""The HTTP API of PROTOCOL.md: rooms, snapshots, prompts, cancel, health."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from server.core.codec import encode, load_client_object, parse_prompt
from server.core.codes import ErrorCode
from server.core.errors import ClientError
from server.core.types import parse_room_name
from server.http.admission import enter_room
from server.http.guards import guard
from server.http.keys import CONFIG, HUB, METRICS, PROMPTS, ROOM_BUDGET

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

MAX_BODY_BYTES = 1 << 20


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """200 while the process serves and its broker answers.

    503 when the broker does not (rooms already loaded still stream, but new ones cannot open here).
    """
    if await request.app[HUB].broker.reachable():
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "degraded", "broker": "unreachable"}, status=503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/api/rooms")
async def list_rooms(request: web.Request) -> web.Response:
    """Every room of this instance with its viewers, seq, epoch and streaming state."""
    rooms = [
        {
            "name": room.state.name,
            "viewers": room.viewers,
            "seq": room.state.seq,
            "epoch": room.state.epoch,
            "streaming": room.state.streaming_turn is not None,
            "turns": room.state.turn_count,
        }
        for room in request.app[HUB].rooms.values()
        if room.loaded
    ]
    return web.json_response({"rooms": rooms})


@routes.get("/api/rooms/{room}")
async def room_snapshot(request: web.Request) -> web.Response:
    """The room's snapshot object."""
    hub = request.app[HUB]
    name = parse_room_name(request.match_info["room"])
    caller = guard(request, request.app[CONFIG], name, "view")
    enter_room(hub, request.app[ROOM_BUDGET], name, caller.principal)
    room = await hub.open(name)
    return web.Response(body=encode(room.state.snapshot()), content_type="application/json")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's whole body as a checked JSON object.

    At most 1 MiB of UTF-8, every string in it valid text and every number finite.

    The body is read to its end however it arrives (in several writes, chunked): one read of
    the stream would return only what happens to be buffered.

    Raises:
        ClientError: ``too_large`` or ``bad_request`` (naming the field).
    """
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ClientError(ErrorCode.TOO_LARGE, "request body too large")
    try:
        raw = await request.read()  # bounded by the app's client_max_size
    except web.HTTPRequestEntityTooLarge as exc:
        raise ClientError(ErrorCode.TOO_LARGE, "request body too large") from exc
    if len(raw) > MAX_BODY_BYTES:
        raise ClientError(ErrorCode.TOO_LARGE, "request body too large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(ErrorCode.BAD_REQUEST, "body is not UTF-8") from exc
    return load_client_object(text)


@routes.post("/api/rooms/{room}/prompts")
async def post_prompt(request: web.Request) -> web.Response:
    """Start a turn; 202 with its id and the seq of its ``turn.start``."""
    config = request.app[CONFIG]
    hub = request.app[HUB]
    name = parse_room_name(request.match_info["room"])
    caller = guard(request, config, name, "prompt")
    body = await json_body(request)
    prompt = parse_prompt(body, max_prompt_chars=config.limits.max_prompt_chars)
    enter_room(hub, request.app[ROOM_BUDGET], name, caller.principal)
    room = await hub.open(name)
    started = await request.app[PROMPTS].submit(
        hub, room, prompt, caller.principal, default_model=config.upstream.model
    )
    return web.json_response({"turn": started.turn, "seq": started.seq}, status=202)


@routes.post("/api/rooms/{room}/turns/{turn}/cancel")
async def cancel_turn(request: web.Request) -> web.Response:
    """Cancel a streaming turn: 202, 404 unknown, 409 ``turn_ended``."""
    hub = request.app[HUB]
    name = parse_room_name(request.match_info["room"])
    caller = guard(request, request.app[CONFIG], name, "prompt")
    enter_room(hub, request.app[ROOM_BUDGET], name, caller.principal)
    room = await hub.open(name)  # the turn may stream on another instance
    end = await hub.cancel(room, request.match_info["turn"])
    return web.json_response({"turn": end.turn}, status=202)
