"""The mock upstream's Responses API: create, retrieve and cancel a response.

``POST /v1/responses`` answers like ``/v1/chat/completions`` does (same scenarios, same
text for the same last user message, same pacing, auth and counters), as a ``Response``
object or, with ``stream``, as OpenAI's named server-sent events (no ``[DONE]`` line).
With ``background`` the response is produced by a task that outlives the request: every
event it built is kept, so ``GET /v1/responses/{id}?stream=true&starting_after=N`` replays
the events after N and follows the live ones to the end, and
``POST /v1/responses/{id}/cancel`` stops it.

Readings of OpenAI where its documentation is silent: ``store`` defaults to true, so any
response not created with ``store: false`` can be retrieved, but only a background one can
be streamed again or cancelled ("Cannot cancel a synchronous response."); cancelling a
cancelled response returns it again, cancelling a finished one is a 400 naming its status;
the live stream of a cancelled response ends with no terminal event; a foreground stream
whose client hangs up stops there, and its stored ``Response`` stays ``in_progress``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator

from aiohttp import web

from server.tools.mock_http import (
    MOCK_SETTINGS,
    MOCK_STATS,
    SSE_HEADERS,
    MockSettings,
    admit,
    bad_request,
    check_auth,
    error_response,
    json_answer,
    token_deadline,
    wait_until,
)
from server.tools.mock_response_events import ResponseEvents
from server.tools.mock_response_store import ResponseStore, StoredResponse
from server.tools.mock_responses_request import ResponsesRequest, parse_responses_request
from server.tools.mock_scenarios import (
    BROKEN_AFTER,
    STREAM_ERROR_MESSAGE,
    ChoicePlan,
    ending_for,
    is_stamped,
    plan_choice,
    stamp_plan,
    stamp_token,
)

RESPONSE_STORE = web.AppKey("mock_response_store", ResponseStore)

Frames = AsyncGenerator[list[bytes], None]


def add_responses_api(app: web.Application) -> None:
    """Register the Responses endpoints and their store on the mock app."""
    settings = app[MOCK_SETTINGS]
    app[RESPONSE_STORE] = ResponseStore(settings.stored_responses, settings.stored_seconds)
    app.router.add_post("/v1/responses", _create)
    app.router.add_get("/v1/responses/{response_id}", _retrieve)
    app.router.add_post("/v1/responses/{response_id}/cancel", _cancel)
    # On shutdown rather than cleanup: the server waits for its handlers in between, and the
    # streams following a background response only end when their producer does.
    app.on_shutdown.append(_stop_background)


def _now() -> float:
    """The loop clock."""
    return asyncio.get_running_loop().time()


async def _produce(
    events: ResponseEvents, plan: ChoicePlan, model: str, settings: MockSettings, start: float
) -> Frames:
    """The frames of a response after its opening, paced like a chat stream."""
    ending = ending_for(model)
    tokens = plan.tokens if ending == "normal" else plan.tokens[:BROKEN_AFTER]
    stamped = is_stamped(model)
    yield events.start()
    for index, (field, text) in enumerate(tokens):
        await wait_until(token_deadline(start, settings, model, index))
        yield events.token(field, stamp_token(time.time()) if stamped else text)
    if ending == "error":
        yield events.fail(STREAM_ERROR_MESSAGE)
    elif ending == "normal":
        yield events.finish(plan.finish_reason)


async def _opened(events: ResponseEvents, rest: Frames) -> Frames:
    """The opening frames, then the rest."""
    yield events.opening()
    async with contextlib.aclosing(rest):
        async for batch in rest:
            yield batch


async def _run_in_background(stored: StoredResponse, frames: Frames) -> None:
    """Keep the frames of a background response as they come; end its log however it stops."""
    try:
        async with contextlib.aclosing(frames):
            async for batch in frames:
                stored.append(batch)
    finally:
        stored.end(_now())


async def _send(request: web.Request, response_id: str, frames: Frames) -> web.StreamResponse:
    """Write frames as a server-sent event stream until they end or the client goes."""
    stats = request.app[MOCK_STATS]
    resp = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": f"req_{response_id}"})
    try:
        async with contextlib.aclosing(frames):
            await resp.prepare(request)
            async for batch in frames:
                await resp.write(b"".join(batch))
    except asyncio.CancelledError:
        # As for chat: a hang-up cancels the handler (with handler_cancellation) ...
        stats.disconnects += 1
        raise
    except ConnectionResetError:
        # ... or shows at the next write.
        stats.disconnects += 1
    return resp


def _json(payload: object) -> web.Response:
    """A JSON response in raw UTF-8."""
    return web.Response(
        text=json.dumps(payload, ensure_ascii=False), content_type="application/json"
    )


async def _complete(
    request: web.Request,
    req: ResponsesRequest,
    events: ResponseEvents,
    plan: ChoicePlan,
    start: float,
) -> web.StreamResponse:
    """Answer with the finished ``Response`` object after the ttft."""
    await wait_until(start + request.app[MOCK_SETTINGS].ttft)
    events.start()
    if req.model == "mock-error":
        # There is no stream to break: fail as chat does, and keep the stored one failed.
        events.fail(STREAM_ERROR_MESSAGE)
        return error_response(500, STREAM_ERROR_MESSAGE, "server_error", "server_error")
    if is_stamped(req.model):
        plan = stamp_plan(plan, time.time())
    for field, text in plan.tokens:
        events.token(field, text)
    events.finish(plan.finish_reason)
    return await json_answer(request, events.snapshot(), req.model)


async def _create(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``."""
    start = _now()
    stats = request.app[MOCK_STATS]
    stats.responses_creates += 1
    response_id = f"resp_mock_{stats.responses_creates}"
    req = await admit(request, parse_responses_request)
    if isinstance(req, web.StreamResponse):
        return req
    plan = plan_choice(req.model, req.prompt, 0, req.tool_name, req.max_output_tokens)
    events = ResponseEvents(response_id, req, plan.tool_name, plan.tool_call_id)
    stored = StoredResponse(events, req.background, start)
    if req.store:
        request.app[RESPONSE_STORE].add(stored, start)
    settings = request.app[MOCK_SETTINGS]
    if req.background:
        stored.append(events.opening())
        frames = _produce(events, plan, req.model, settings, start)
        stored.task = asyncio.create_task(_run_in_background(stored, frames))
        if not req.stream:
            return _json(events.snapshot())
        return await _send(request, response_id, stored.follow(-1))
    try:
        if req.stream:
            frames = _produce(events, plan, req.model, settings, start)
            return await _send(request, response_id, _opened(events, frames))
        return await _complete(request, req, events, plan, start)
    finally:
        # A foreground response ends with its request, however that went.
        stored.end(_now())


def _query_options(request: web.Request) -> tuple[bool, int | None]:
    """``stream`` and ``starting_after`` of a retrieval; ValueError carries the 400 message."""
    stream = request.query.get("stream", "false")
    if stream not in ("true", "false"):
        raise ValueError("Invalid value for 'stream': expected true or false.")
    after = request.query.get("starting_after")
    if after is not None and not (after.isascii() and after.isdigit()):
        raise ValueError("Invalid value for 'starting_after': expected an integer >= 0.")
    return stream == "true", None if after is None else int(after)


def _lookup(request: web.Request) -> StoredResponse | web.Response:
    """The stored response the path names, or the 404 for it."""
    response_id = request.match_info["response_id"]
    stored = request.app[RESPONSE_STORE].get(response_id, _now())
    if stored is None:
        return error_response(
            404, f"Response with id '{response_id}' not found.", "invalid_request_error"
        )
    return stored


async def _retrieve(request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses/{id}``: the Response, or with ``stream=true`` its events."""
    stats = request.app[MOCK_STATS]
    stats.responses_retrieves += 1
    denied = check_auth(request)
    if denied is not None:
        return denied
    try:
        stream, after = _query_options(request)
    except ValueError as exc:
        return bad_request(str(exc))
    if after is not None:
        stats.last_starting_after = after
    stored = _lookup(request)
    if isinstance(stored, web.Response):
        return stored
    if not stream:
        return _json(stored.events.snapshot())
    if not stored.background:
        return bad_request("Only responses created with background=true can be streamed again.")
    return await _send(request, stored.events.id, stored.follow(-1 if after is None else after))


async def _cancel(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses/{id}/cancel``: stop a background response."""
    request.app[MOCK_STATS].responses_cancels += 1
    denied = check_auth(request)
    if denied is not None:
        return denied
    stored = _lookup(request)
    if isinstance(stored, web.Response):
        return stored
    if not stored.background:
        return bad_request("Cannot cancel a synchronous response.")
    status = stored.events.status
    if status in ("queued", "in_progress"):
        stored.cancel(_now())
    elif status != "cancelled":
        return bad_request(f"Cannot cancel a {status} response.")
    return _json(stored.events.snapshot())


async def _stop_background(app: web.Application) -> None:
    """Stop the background producers, which ends the streams that follow them."""
    await app[RESPONSE_STORE].close()
