"""An OpenAI-compatible mock upstream speaking both APIs: chat completions and Responses.

Endpoints: ``/v1/models``, ``/v1/chat/completions`` (here), and the Responses API
``/v1/responses`` with retrieval and cancel (``mock_responses``). It backs demo mode (started
in-process when there is no API key), load tests and tests. Answers are deterministic (see
``mock_scenarios``) and the same for both APIs; the request's ``model`` picks a scenario:
``mock`` (plain answer), ``mock-tools``, ``mock-reasoning``, ``mock-refusal``, ``mock-error``
(in-stream error event), ``mock-truncate`` (stream just stops), ``mock-incomplete`` (cut as
by a token limit), ``mock-429`` and ``mock-500``; for load tests ``mock-long-<N>`` (N
tokens), ``mock-stamp-<N>`` (N tokens, each its send time) and ``mock-flood-<N>`` (N chunks
of about 1 kB, never paced). Any other model name behaves like ``mock``. ``GET /v1/_stats``
returns the counts of ``MockStats``, so a load test in another process can check how many
requests reached the mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from typing import Any

from aiohttp import web

from server.tools.mock_http import (
    MOCK_SETTINGS,
    MOCK_STATS,
    SSE_HEADERS,
    MockSettings,
    MockStats,
    admit,
    check_auth,
    error_response,
    json_answer,
    token_deadline,
    wait_until,
)
from server.tools.mock_responses import add_responses_api
from server.tools.mock_scenarios import (
    BROKEN_AFTER,
    CREATED,
    MODELS,
    STREAM_ERROR_MESSAGE,
    ChatRequest,
    ChoicePlan,
    Ending,
    ending_for,
    is_stamped,
    parse_request,
    plan_choice,
    stamp_plan,
    stamp_token,
    token_delta,
)

__all__ = ["MOCK_SETTINGS", "MOCK_STATS", "MockSettings", "MockStats", "create_mock_app"]

SYSTEM_FINGERPRINT = "fp_mock"
_DONE = b"data: [DONE]\n\n"
_STREAM_ERROR = {
    "error": {"message": STREAM_ERROR_MESSAGE, "type": "server_error", "code": "server_error"}
}


def _usage(chat: ChatRequest, plans: list[ChoicePlan]) -> dict[str, int]:
    """The usage block for what the plans say."""
    completion = sum(len(plan.tokens) for plan in plans)
    return {
        "prompt_tokens": chat.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": chat.prompt_tokens + completion,
    }


def _sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    # Raw UTF-8 rather than \\u escapes, so clients really get multi-byte sequences.
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class _ChunkMaker:
    """Builds the ``chat.completion.chunk`` objects of one response."""

    def __init__(self, completion_id: str, chat: ChatRequest) -> None:
        self._base: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": chat.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        self._include_usage = chat.include_usage

    def choice(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        """A chunk with one choice."""
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {**self._base, "choices": [choice]}
        if self._include_usage:
            # OpenAI marks every chunk but the last with an explicit null when usage is on.
            chunk["usage"] = None
        return _sse(chunk)

    def usage(self, usage: dict[str, int]) -> bytes:
        """The trailing usage chunk, with no choices."""
        return _sse({**self._base, "choices": [], "usage": usage})


async def _stream(
    request: web.Request,
    chat: ChatRequest,
    plans: list[ChoicePlan],
    completion_id: str,
    start: float,
) -> web.StreamResponse:
    """Stream the plans as OpenAI does, round-robin over the choices, paced."""
    settings = request.app[MOCK_SETTINGS]
    stats = request.app[MOCK_STATS]
    ending: Ending = ending_for(chat.model)
    maker = _ChunkMaker(completion_id, chat)
    request_id = completion_id.replace("chatcmpl-", "req_")
    resp = web.StreamResponse(headers={**SSE_HEADERS, "x-request-id": request_id})
    lengths = [len(plan.tokens) for plan in plans]
    if ending != "normal":
        lengths = [min(length, BROKEN_AFTER) for length in lengths]
    rounds = max(lengths)
    stamped = is_stamped(chat.model)
    try:
        await resp.prepare(request)
        # The role chunks go out before the ttft wait, so clients see the stream open early.
        await resp.write(b"".join(maker.choice(p.index, p.opening_delta()) for p in plans))
        # One extra round sends the finish chunks of the longest choices.
        for r in range(rounds + 1):
            if r < rounds:
                await wait_until(token_deadline(start, settings, chat.model, r))
            out: list[bytes] = []
            for plan, length in zip(plans, lengths, strict=True):
                if r < length:
                    field, text = plan.tokens[r]
                    if stamped:
                        text = stamp_token(time.time())
                    out.append(maker.choice(plan.index, token_delta(field, text)))
                elif r == length and ending == "normal":
                    out.append(maker.choice(plan.index, {}, plan.finish_reason))
            if out:
                await resp.write(b"".join(out))
        if ending == "error":
            await resp.write(_sse(_STREAM_ERROR))
        if ending != "normal":
            return resp
        if chat.include_usage:
            await resp.write(maker.usage(_usage(chat, plans)))
        await resp.write(_DONE)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client goes away (with handler_cancellation,
        # as in TestServer); a server shutdown lands here too, and is as good as a hang-up.
        stats.disconnects += 1
        raise
    except ConnectionResetError:
        # Without handler cancellation, the next write is where a disconnect shows.
        stats.disconnects += 1
    return resp


async def _complete(
    request: web.Request,
    chat: ChatRequest,
    plans: list[ChoicePlan],
    completion_id: str,
    start: float,
) -> web.StreamResponse:
    """Answer with one ``chat.completion`` object after the ttft."""
    await wait_until(start + request.app[MOCK_SETTINGS].ttft)
    if chat.model == "mock-error":
        # There is no stream to break, so fail the way a non-streaming request would.
        return error_response(500, STREAM_ERROR_MESSAGE, "server_error", "server_error")
    if is_stamped(chat.model):
        plans = [stamp_plan(plan, time.time()) for plan in plans]
    completion = {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": chat.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": plan.index,
                "message": plan.message(),
                "logprobs": None,
                "finish_reason": plan.finish_reason,
            }
            for plan in plans
        ],
        "usage": _usage(chat, plans),
    }
    return await json_answer(request, completion, chat.model)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    start = asyncio.get_running_loop().time()
    stats = request.app[MOCK_STATS]
    stats.requests += 1
    completion_id = f"chatcmpl-mock-{stats.requests}"
    chat = await admit(request, parse_request)
    if isinstance(chat, web.StreamResponse):
        return chat
    plans = [
        plan_choice(chat.model, chat.prompt, i, chat.tool_name, chat.max_tokens)
        for i in range(chat.n)
    ]
    if chat.stream:
        return await _stream(request, chat, plans, completion_id, start)
    return await _complete(request, chat, plans, completion_id, start)


async def _models(request: web.Request) -> web.Response:
    """``GET /v1/models``: every scenario model."""
    request.app[MOCK_STATS].models_requests += 1
    denied = check_auth(request)
    if denied is not None:
        return denied
    data = [
        {"id": model, "object": "model", "created": CREATED, "owned_by": "fanout-mock"}
        for model in MODELS
    ]
    return web.json_response({"object": "list", "data": data})


async def _stats(request: web.Request) -> web.Response:
    """``GET /v1/_stats``: what the mock has counted (not part of the OpenAI API)."""
    return web.json_response(request.app[MOCK_STATS].counts())


def create_mock_app(settings: MockSettings | None = None) -> web.Application:
    """The mock upstream as an aiohttp application."""
    app = web.Application()
    app[MOCK_SETTINGS] = settings or MockSettings()
    app[MOCK_STATS] = MockStats()
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/_stats", _stats)
    add_responses_api(app)
    return app


def _base_url(runner: web.AppRunner) -> str:
    """The ``/v1`` base URL of the runner's first listening socket."""
    host, port = runner.addresses[0][:2]
    # A wildcard bind is reachable on loopback; the wildcard itself is not a destination.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


async def _start(
    host: str, port: int, settings: MockSettings, access_log: bool
) -> tuple[web.AppRunner, str]:
    """Start the mock app on ``host:port``; returns the runner and the base URL."""
    app = create_mock_app(settings)
    runner = web.AppRunner(app) if access_log else web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, _base_url(runner)


async def start_mock_upstream(
    host: str, port: int, settings: MockSettings
) -> tuple[web.AppRunner, str]:
    """Start the mock in this loop (port 0 picks a free one); returns runner and base URL."""
    # No access log: in demo mode it would interleave with the real server's log.
    return await _start(host, port, settings, access_log=False)


async def _serve_forever(host: str, port: int, settings: MockSettings) -> None:
    """Run the mock until SIGINT or SIGTERM."""
    runner, base_url = await _start(host, port, settings, access_log=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows; Ctrl-C still ends asyncio.run there.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(
        f"mock upstream listening on {base_url} (models: {', '.join(MODELS)})",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_mock_upstream(host: str, port: int, settings: MockSettings) -> None:
    """Serve the mock until interrupted (``python -m server mock-upstream``)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(host, port, settings))
