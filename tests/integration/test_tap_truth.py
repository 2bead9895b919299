"""The tap tells the truth.

A failed or truncated turn is never a 2xx success for its caller, bad input is refused before any
upstream request, and the tap applies the prompt limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from server.tools.mock_upstream import MockSettings, start_mock_upstream

from .conftest import ServerFactory, viewer
from .fake_upstream import FakeUpstream, Script, chunk
from .test_hostile_clients import no_tracebacks, room_is_healthy

TIMEOUT = 10.0


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record from INFO up."""
    caplog.set_level(logging.INFO)
    return caplog


def sdk_for(server: TestServer, room: str) -> openai.AsyncOpenAI:
    """The official SDK pointed at the server's tap for ``room``."""
    return openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")),
        api_key="caller-key",
        max_retries=0,
        default_headers={"X-Room": room},
        http_client=openai.DefaultAioHttpClient(),
    )


@pytest.fixture
async def mock_server(make_server: ServerFactory) -> AsyncIterator[TestServer]:
    """A fanout server whose upstream is the mock upstream (scenarios picked by model)."""
    runner, url = await start_mock_upstream(
        "127.0.0.1", 0, MockSettings(tokens_per_second=0.0, ttft=0.0)
    )
    try:
        yield await make_server(upstream__base_url=url)
    finally:
        await runner.cleanup()


MESSAGES: Any = [{"role": "user", "content": "tell me something"}]


async def read_all(stream: AsyncIterator[Any], pieces: list[str]) -> None:
    """Read an SDK stream to its end, collecting choice 0's text in ``pieces``."""
    async for part in stream:
        pieces.extend(c.delta.content or "" for c in part.choices)


@pytest.mark.parametrize(
    ("model", "status"), [("mock-error", "failed"), ("mock-truncate", "truncated")]
)
async def test_non_streaming_failure_is_not_a_success(
    model: str,
    status: str,
    mock_server: TestServer,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A non-streaming tap call whose turn fails or is truncated is 502.

    A non-streaming tap call whose turn fails or is truncated is 502 upstream_error with the error
    JSON (the SDK raises), while the room shows the same outcome.
    """
    watcher = await viewer(session, mock_server, "truth")
    sdk = sdk_for(mock_server, "truth")
    try:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.APIStatusError) as caught:
                await sdk.chat.completions.create(model=model, messages=MESSAGES)
    finally:
        await sdk.close()
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"]
    turn = await watcher.wait_turn_end()
    assert turn.status == status
    assert turn.text()  # something streamed to the room before it went wrong
    await watcher.close()
    await room_is_healthy(session, mock_server, "truth")
    no_tracebacks(logs)


@pytest.mark.parametrize(
    ("model", "status"), [("mock-error", "failed"), ("mock-truncate", "truncated")]
)
async def test_streaming_failure_midway_raises_in_the_sdk(
    model: str,
    status: str,
    mock_server: TestServer,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A streamed tap answer that fails or is cut midway ends with an ``error`` data line.

    The SDK raises after the text it got, which is the room's text.
    """
    watcher = await viewer(session, mock_server, "midway")
    sdk = sdk_for(mock_server, "midway")
    pieces: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            stream = await sdk.chat.completions.create(model=model, messages=MESSAGES, stream=True)
            with pytest.raises(openai.APIError) as caught:
                await read_all(stream, pieces)
    finally:
        await sdk.close()
    assert not isinstance(caught.value, openai.APIStatusError)  # raised mid-stream
    turn = await watcher.wait_turn_end()
    assert turn.status == status
    assert "".join(pieces) == turn.text() != ""
    await watcher.close()
    await room_is_healthy(session, mock_server, "midway")
    no_tracebacks(logs)


async def raw_tap(
    session: aiohttp.ClientSession, server: TestServer, room: str, body: Any
) -> tuple[int, str, bytes]:
    """POST a tap request; the status, content type and whole body."""
    async with asyncio.timeout(TIMEOUT):
        resp = await session.post(
            server.make_url("/v1/chat/completions"), json=body, headers={"X-Room": room}
        )
        return resp.status, resp.content_type, await resp.read()


CUT_BEFORE_ANYTHING: dict[str, list[Any]] = {
    "empty body": [],
    "error first": [{"error": {"message": "overloaded", "type": "server_error"}}],
    "only [DONE]": ["data: [DONE]\n\n"],
}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "complete"])
@pytest.mark.parametrize("chunks", CUT_BEFORE_ANYTHING.values(), ids=CUT_BEFORE_ANYTHING.keys())
async def test_a_turn_that_fails_before_anything_streamed_is_a_502(
    chunks: list[Any],
    stream: bool,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """An upstream 200 whose body is empty, starts with an error or is only [DONE].

    The caller gets 502 with the error JSON, streaming or not, never an empty 200.
    """
    upstream.always(Script(chunks=chunks))
    body = {"model": "m", "messages": MESSAGES, "stream": stream}
    status, content_type, raw = await raw_tap(session, server, "cut", body)
    assert (status, content_type) == (502, "application/json"), raw
    assert b'"code":"upstream_error"' in raw
    await room_is_healthy(session, server, "cut", upstream)
    no_tracebacks(logs)


async def test_done_without_a_finish_reason_is_not_passed_on(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """An upstream that sends text then [DONE] with no finish_reason (truncated).

    The SDK caller gets the text, then an error instead of the [DONE] that would end it quietly.
    """
    upstream.always(Script(chunks=[chunk("Hel"), chunk("lo"), "data: [DONE]\n\n"]))
    sdk = sdk_for(server, "done")
    pieces: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            stream = await sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            with pytest.raises(openai.APIError, match="before it was complete"):
                await read_all(stream, pieces)
    finally:
        await sdk.close()
    assert "".join(pieces) == "Hello"
    await room_is_healthy(session, server, "done", upstream)
    no_tracebacks(logs)


async def test_nothing_after_an_in_stream_error_reaches_the_caller(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """Text, an in-stream error, then more text and [DONE].

    The room's turn ends at the error, and so does the caller's stream (its last data line is the
    error, nothing after it).
    """
    error = {"error": {"message": "overloaded", "type": "server_error"}}
    upstream.always(Script(chunks=[chunk("Hel"), error, chunk("lo"), "data: [DONE]\n\n"]))
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    status, content_type, raw = await raw_tap(session, server, "mid", body)
    assert (status, content_type) == (200, "text/event-stream"), raw
    data = [ln[5:].strip() for ln in raw.decode().splitlines() if ln.startswith("data:")]
    assert [json.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1]] == ["Hel"]
    assert json.loads(data[-1])["error"]["code"] == "upstream_error"
    assert "overloaded" in json.loads(data[-1])["error"]["message"]
    assert b"[DONE]" not in raw
    await room_is_healthy(session, server, "mid", upstream)
    no_tracebacks(logs)


async def test_a_completed_stream_ends_with_one_done(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A completed streamed answer ends with exactly one ``data: [DONE]`` and no error line."""
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    status, content_type, raw = await raw_tap(session, server, "ok", body)
    assert (status, content_type) == (200, "text/event-stream")
    assert raw.endswith(b"data: [DONE]\n\n")
    assert raw.count(b"[DONE]") == 1
    assert b'"error"' not in raw


BAD_TAP_BODIES: dict[str, tuple[str, str]] = {
    "NaN temperature": (
        '{"model": "m", "temperature": NaN, "messages": [{"role": "user", "content": "x"}]}',
        "'temperature' is not a finite number",
    ),
    "surrogate in a system message": (
        '{"model": "m", "messages": [{"role": "system", "content": "be \\ud800 nice"},'
        ' {"role": "user", "content": "x"}]}',
        "'messages[0].content' is not valid Unicode text",
    ),
    "surrogate in the model": (
        '{"model": "\\udc00", "messages": [{"role": "user", "content": "x"}]}',
        "'model' is not valid",
    ),
    "surrogate in a tool": (
        '{"messages": [{"role": "user", "content": "x"}],'
        ' "tools": [{"type": "function", "function": {"name": "f", "description": "\\ud800"}}]}',
        "'tools[0].function.description'",
    ),
    "1e999 in a text part": (
        '{"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "n": 1e999}]}]}',
        "'messages[0].content[0].n' is not a finite number",
    ),
}


@pytest.mark.parametrize(("body", "message"), BAD_TAP_BODIES.values(), ids=BAD_TAP_BODIES.keys())
async def test_bad_text_in_a_tap_body_is_400_naming_the_field(
    body: str,
    message: str,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A non-finite number or a lone surrogate in a tap body is 400 bad_request.

    A non-finite number or a lone surrogate anywhere in a tap body is 400 bad_request naming the
    field, before any upstream request or turn.
    """
    resp = await session.post(
        server.make_url("/v1/chat/completions"),
        data=body.encode(),
        headers={"X-Room": "badtap", "Content-Type": "application/json"},
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "bad_request"
    assert message in error["message"]
    assert upstream.requests == []
    await room_is_healthy(session, server, "badtap", upstream)
    no_tracebacks(logs)


@pytest.mark.parametrize(
    "content",
    [
        "x" * 150_000,
        [{"type": "text", "text": "x" * 20_000}, {"type": "text", "text": "y" * 20_000}],
    ],
    ids=["string", "parts"],
)
async def test_the_tap_applies_max_prompt_chars(
    content: Any,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A tap prompt over limits.max_prompt_chars is 413 too_large.

    A tap prompt (last user message) over limits.max_prompt_chars (32,768) is 413 too_large, as on
    POST .../prompts, with no upstream request.
    """
    sdk = sdk_for(server, "limit")
    try:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(openai.APIStatusError) as caught:
                await sdk.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": content}]
                )
    finally:
        await sdk.close()
    assert caught.value.status_code == 413
    assert caught.value.code == "too_large"
    assert upstream.requests == []
    await room_is_healthy(session, server, "limit", upstream)
    no_tracebacks(logs)
