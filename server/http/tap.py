"""The OpenAI-compatible tap: chat completions and Responses with ``X-Room``, and models.

``POST /v1/chat/completions`` and ``POST /v1/responses`` with ``X-Room``: one upstream
request serves the caller (answered as the upstream would) and the room's viewers (who watch
the turn live) at once. ``GET /v1/models`` passes the upstream's list on.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from server.core.codec import dump_json
from server.core.errors import UpstreamError
from server.core.tap import completion_object, parse_tap_request, relay_data, tap_failure
from server.core.tap_responses import ResponsesRelay, parse_responses_tap_request
from server.core.types import TurnId, parse_room_name
from server.http.api import json_body
from server.http.guards import guard
from server.http.keys import CONFIG, UPSTREAM
from server.http.tap_relay import (
    TapRelay,
    failure_response,
    json_response,
    sse_bytes,
    sse_response,
    start_tap_turn,
    tap_room,
    upstream_error_response,
    write_within,
)
from server.rooms.room import Room

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Relay one upstream chat completion to the caller while the room watches it."""
    config = request.app[CONFIG]
    name, principal = tap_room(request)
    tap = parse_tap_request(
        await json_body(request),
        default_model=config.upstream.model,
        include_usage=config.upstream.include_usage,
        max_prompt_chars=config.limits.max_prompt_chars,
    )
    room, relay, started = await start_tap_turn(request, name, principal, tap, "chat")
    try:
        if tap.stream:
            timeout = config.server.sse_write_timeout_seconds
            return await _relay_stream(request, relay, room, started.turn, tap.wants_usage, timeout)
        return await _complete(relay, room, started.turn)
    finally:
        relay.closed = True


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
                    return upstream_error_response(item[1])
                continue  # the turn's end says how it failed
            sse = item[1]
            data = relay_data(sse.data, wants_usage=wants_usage)
            if data is None:
                continue
            if response is None:
                response = sse_response()
                await response.prepare(request)
            await write_within(request, response.write(sse_bytes(sse.event, data)), timeout)
        failure = tap_failure(room.state.turns.view(turn_id))
        if failure is not None and response is None:
            return failure_response(failure)
        if response is None:
            response = sse_response()
            await response.prepare(request)
        if failure is None:
            await write_within(request, response.write(b"data: [DONE]\n\n"), timeout)
        else:
            await write_within(
                request,
                response.write(sse_bytes(None, dump_json(failure.body()).decode())),
                timeout,
            )
        await write_within(request, response.write_eof(), timeout)
    except ConnectionError:
        log.info("tap caller went away or stopped reading; the room's turn goes on")
    assert response is not None  # a connection error comes from prepare or a write
    return response


async def _complete(relay: TapRelay, room: Room, turn_id: TurnId) -> web.Response:
    """One ``chat.completion`` once the turn completed, else the error JSON with its status."""
    while (item := await relay.queue.get())[0] != "end":
        if item[0] == "error":
            return upstream_error_response(item[1])
    turn = room.state.turns.view(turn_id)  # the room's state now: it may have been reloaded
    failure = tap_failure(turn)
    if failure is not None:
        return failure_response(failure)
    assert turn is not None  # tap_failure reports a forgotten turn
    body = completion_object(turn, completion_id=f"chatcmpl-{turn_id}", created=int(time.time()))
    return web.Response(body=dump_json(body), content_type="application/json")


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    """Relay one upstream Responses API response to the caller while the room watches it."""
    config = request.app[CONFIG]
    name, principal = tap_room(request)
    tap = parse_responses_tap_request(
        await json_body(request),
        default_model=config.upstream.model,
        max_prompt_chars=config.limits.max_prompt_chars,
    )
    room, relay, started = await start_tap_turn(request, name, principal, tap, "responses")
    try:
        if tap.stream:
            timeout = config.server.sse_write_timeout_seconds
            return await _relay_events(request, relay, room, started.turn, timeout)
        return await _final_response(relay, room, started.turn)
    finally:
        relay.closed = True


async def _relay_events(
    request: web.Request, relay: TapRelay, room: Room, turn_id: TurnId, timeout: float
) -> web.StreamResponse:
    """Relay the upstream's Responses events; the status line waits for the first one.

    As for chat (``_relay_stream``), with what a Responses stream needs instead of
    ``[DONE]``: the terminal event that ended the turn is relayed, and a turn that did not
    complete ends the stream with its failure (``ResponsesRelay.closing``).
    """
    events = ResponsesRelay()
    response: web.StreamResponse | None = None
    try:
        while (item := await relay.queue.get())[0] != "end":
            if item[0] == "error":
                if response is None:
                    return upstream_error_response(item[1])
                continue  # the turn's end says how it failed
            sse = item[1]
            data = events.take(sse.event, sse.data)
            if data is None:
                continue
            if response is None:
                response = sse_response()
                await response.prepare(request)
            await write_within(request, response.write(sse_bytes(sse.event, data)), timeout)
        turn = room.state.turns.view(turn_id)
        failure = tap_failure(turn)
        if failure is not None and response is None:
            return failure_response(failure)
        if response is None:
            response = sse_response()
            await response.prepare(request)
        closing = events.closing(turn)
        if closing is not None:
            await write_within(request, response.write(sse_bytes(*closing)), timeout)
        await write_within(request, response.write_eof(), timeout)
    except ConnectionError:
        log.info("tap caller went away or stopped reading; the room's turn goes on")
    assert response is not None  # a connection error comes from prepare or a write
    return response


async def _final_response(relay: TapRelay, room: Room, turn_id: TurnId) -> web.Response:
    """The final ``Response`` once the turn completed, else the error JSON with its status."""
    events = ResponsesRelay()
    while (item := await relay.queue.get())[0] != "end":
        if item[0] == "error":
            return upstream_error_response(item[1])
        events.take(item[1].event, item[1].data)
    return json_response(*events.answer(room.state.turns.view(turn_id)))


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
        return upstream_error_response(exc)
    return web.Response(body=body, status=status, content_type="application/json")
