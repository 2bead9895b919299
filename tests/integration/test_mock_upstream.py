"""The mock upstream, driven over real sockets by aiohttp and by the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from pytest_aiohttp import AiohttpClient

from server.tools.mock_scenarios import (
    ARGUMENT_FRAGMENTS,
    BROKEN_AFTER,
    FLOOD_CHUNK_CHARS,
    LONG_DEFAULT_TOKENS,
    MODELS,
    REFUSAL,
    THOUGHT,
    TOOL_ARGUMENTS,
    answer_text,
    flood_tokens,
    long_tokens,
    tokenize,
)
from server.tools.mock_upstream import (
    MOCK_STATS,
    MockSettings,
    MockStats,
    create_mock_app,
)

from .conftest import Mock, MockFactory, sdk

TIMEOUT = 5.0
PROMPT = "Quelle est la météo à Paris aujourd'hui, s'il te plaît ?"
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
WEATHER = {"city": "Paris", "unit": "celsius"}


@pytest.fixture
async def mock(start_mock: MockFactory) -> Mock:
    """One fast mock upstream."""
    return await start_mock()


@pytest.fixture
async def client(mock: Mock) -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client of ``mock``."""
    async with sdk(mock.url) as c:
        yield c


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session."""
    async with aiohttp.ClientSession() as s:
        yield s


async def raw_events(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[list[str], int]:
    """POST a chat completion and split the SSE body into its ``data:`` payloads."""
    async with session.post(f"{url}/chat/completions", json=body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = (await resp.read()).decode()
    assert text.endswith("\n\n"), "every event must be terminated"
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events], resp.status


def tokens(text: str, limit: int | None = None) -> str:
    """The first ``limit`` tokens of text, joined."""
    return "".join(tokenize(text)[:limit])


async def test_stream_rebuilds_deterministic_text(client: openai.AsyncOpenAI, mock: Mock) -> None:
    """A plain SDK stream: role chunk, one word per chunk, finish "stop", the expected answer."""
    async with asyncio.timeout(TIMEOUT):
        stream = await client.chat.completions.create(model="mock", messages=MESSAGES, stream=True)
        chunks = [c async for c in stream]
    first, last = chunks[0].choices[0], chunks[-1].choices[0]
    assert (first.delta.role, first.delta.content) == ("assistant", "")
    assert (last.delta.content, last.finish_reason) == (None, "stop")
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert all(p is not None and re.fullmatch(r"\s?\S+", p) for p in pieces)
    text = "".join(p or "" for p in pieces)
    assert text == answer_text(PROMPT, 0)
    assert text.startswith(f"Mock answer 0 to: {PROMPT[:40]}. ")
    assert 40 <= len(pieces) <= 60
    rest = text.removeprefix(f"Mock answer 0 to: {PROMPT[:40]}.")
    assert any(ord(ch) > 127 for ch in rest), "answers exercise multi-byte UTF-8"
    assert {(c.id, c.object, c.model, c.system_fingerprint) for c in chunks} == {
        ("chatcmpl-mock-1", "chat.completion.chunk", "mock", "fp_mock")
    }
    assert all(c.usage is None and c.choices[0].index == 0 for c in chunks)
    assert (mock.stats.requests, mock.stats.disconnects) == (1, 0)
    assert mock.stats.last_request is not None
    assert mock.stats.last_request["messages"] == MESSAGES
    assert mock.stats.last_request["stream"] is True


async def test_answers_are_deterministic(client: openai.AsyncOpenAI) -> None:
    """Same prompt, same answer (also across hash seeds); another prompt, another answer."""
    async with asyncio.timeout(TIMEOUT):
        texts = []
        for prompt in (PROMPT, PROMPT, "Something else entirely"):
            reply = await client.chat.completions.create(
                model="mock", messages=[{"role": "user", "content": prompt}]
            )
            texts.append(reply.choices[0].message.content)
        code = (
            "from server.tools.mock_scenarios import answer_text; "
            f"print(answer_text({PROMPT!r}, 0))"
        )
        outputs = []
        for seed in ("1", "2"):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                code,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONIOENCODING": "utf-8"},
            )
            out, _ = await proc.communicate()
            assert proc.returncode == 0
            outputs.append(out.decode().rstrip("\n"))
    assert texts[0] == texts[1] != texts[2]
    assert outputs == [texts[0], texts[0]]


async def test_include_usage(
    mock: Mock, client: openai.AsyncOpenAI, session: aiohttp.ClientSession
) -> None:
    """include_usage: explicit null usage on every chunk, then a usage chunk with no choices."""
    body = {
        "model": "mock",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with asyncio.timeout(TIMEOUT):
        events, status = await raw_events(session, mock.url, body)
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    assert status == 200
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert all("usage" in p and p["usage"] is None for p in parsed[:-1])
    completion = len(tokenize(answer_text(PROMPT, 0)))
    usage = parsed[-1]["usage"]
    assert parsed[-1]["choices"] == []
    assert usage["completion_tokens"] == completion
    assert usage["total_tokens"] == usage["prompt_tokens"] + completion > completion
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    sdk_usage = chunks[-1].usage
    assert (sdk_usage.prompt_tokens, sdk_usage.completion_tokens, sdk_usage.total_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["total_tokens"],
    )
    assert all(c.usage is None for c in chunks[:-1])


async def test_non_stream_completion(client: openai.AsyncOpenAI) -> None:
    """Without ``stream``: one chat.completion answering the last user message, with usage."""
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "An earlier question"},
        {"role": "assistant", "content": "An earlier answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Two"}, {"type": "text", "text": "parts"}],
        },
    ]
    async with asyncio.timeout(TIMEOUT):
        reply = await client.chat.completions.create(model="mock", messages=messages)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-mock-")
    [choice] = reply.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == answer_text("Two parts", 0)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == len(tokenize(answer_text("Two parts", 0)))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_n_choices_interleave(client: openai.AsyncOpenAI) -> None:
    """n=2: choices alternate token by token, and each has its own deterministic text."""
    async with asyncio.timeout(TIMEOUT):
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True, n=2
        )
        chunks = [c async for c in stream]
    assert all(len(c.choices) == 1 for c in chunks)
    texts = ["", ""]
    order = []
    finishes = {}
    for c in chunks:
        choice = c.choices[0]
        if choice.delta.content:
            texts[choice.index] += choice.delta.content
            order.append(choice.index)
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert texts == [answer_text(PROMPT, 0), answer_text(PROMPT, 1)]
    assert texts[0] != texts[1]
    shorter = min(len(tokenize(t)) for t in texts)
    assert order[: 2 * shorter] == [0, 1] * shorter
    assert finishes == {0: "stop", 1: "stop"}
    assert [c.choices[0].delta.role for c in chunks[:2]] == ["assistant", "assistant"]


async def test_max_tokens_cuts_with_length(client: openai.AsyncOpenAI) -> None:
    """max_tokens (stream) and max_completion_tokens (non-stream) cut with finish "length"."""
    async with asyncio.timeout(TIMEOUT):
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True, max_tokens=5
        )
        chunks = [c async for c in stream]
        reply = await client.chat.completions.create(
            model="mock", messages=MESSAGES, max_completion_tokens=3
        )
    content = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert "".join(content) == tokens(answer_text(PROMPT, 0), 5)
    assert len(content) == 5
    assert chunks[-1].choices[0].finish_reason == "length"
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == tokens(answer_text(PROMPT, 0), 3)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 3


async def test_tool_call_stream(client: openai.AsyncOpenAI) -> None:
    """mock-tools streams one tool call whose argument fragments assemble into valid JSON."""
    async with asyncio.timeout(TIMEOUT):
        stream = await client.chat.completions.create(
            model="mock-tools", messages=MESSAGES, stream=True
        )
        chunks = [c async for c in stream]
    opening = chunks[0].choices[0].delta
    assert (opening.role, opening.content) == ("assistant", None)
    assert opening.tool_calls is not None
    [call] = opening.tool_calls
    assert (call.index, call.id, call.type) == (0, "call_mock_1", "function")
    assert call.function is not None
    assert (call.function.name, call.function.arguments) == ("get_weather", "")
    fragments = []
    for c in chunks[1:-1]:
        [delta_call] = c.choices[0].delta.tool_calls or []
        assert delta_call.index == 0
        assert delta_call.id is None
        assert delta_call.function is not None
        assert delta_call.function.arguments is not None
        fragments.append(delta_call.function.arguments)
    assert len(fragments) >= 3
    assert json.loads("".join(fragments)) == WEATHER
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(c.choices[0].delta.content is None for c in chunks)


async def test_tool_call_uses_request_tool_name(client: openai.AsyncOpenAI) -> None:
    """mock-tools names the request's first tool, and works without streaming too."""
    tool: Any = {
        "type": "function",
        "function": {"name": "lookup_forecast", "parameters": {"type": "object"}},
    }
    async with asyncio.timeout(TIMEOUT):
        reply = await client.chat.completions.create(
            model="mock-tools", messages=MESSAGES, tools=[tool]
        )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id == "call_mock_1"
    assert call.type == "function"
    assert call.function.name == "lookup_forecast"
    assert json.loads(call.function.arguments) == WEATHER
    assert "".join(ARGUMENT_FRAGMENTS) == TOOL_ARGUMENTS


async def test_reasoning_stream(client: openai.AsyncOpenAI) -> None:
    """mock-reasoning sends reasoning_content deltas first, then the normal answer."""
    async with asyncio.timeout(TIMEOUT):
        stream = await client.chat.completions.create(
            model="mock-reasoning", messages=MESSAGES, stream=True
        )
        chunks = [c async for c in stream]
    kinds = []
    reasoning = content = ""
    for c in chunks:
        delta = c.choices[0].delta
        thought = (delta.model_extra or {}).get("reasoning_content")
        if thought:
            reasoning += thought
            kinds.append("r")
        if delta.content:
            content += delta.content
            kinds.append("c")
    assert reasoning == THOUGHT
    assert content == answer_text(PROMPT, 0)
    assert "".join(kinds) == "r" * len(tokenize(THOUGHT)) + "c" * len(tokenize(content))
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_refusal_stream(client: openai.AsyncOpenAI) -> None:
    """mock-refusal streams the refusal text in refusal deltas and no content."""
    async with asyncio.timeout(TIMEOUT):
        stream = await client.chat.completions.create(
            model="mock-refusal", messages=MESSAGES, stream=True
        )
        chunks = [c async for c in stream]
        reply = await client.chat.completions.create(model="mock-refusal", messages=MESSAGES)
    refusal = "".join(c.choices[0].delta.refusal or "" for c in chunks)
    assert refusal == REFUSAL == "I'm sorry, but I can't help with that."
    assert sum(1 for c in chunks if c.choices[0].delta.refusal) > 1
    assert not any(c.choices[0].delta.content for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (reply.choices[0].message.refusal, reply.choices[0].message.content) == (REFUSAL, None)


async def test_error_event_mid_stream(
    client: openai.AsyncOpenAI, mock: Mock, session: aiohttp.ClientSession
) -> None:
    """mock-error: a few tokens, then an error event the SDK raises as APIError; no [DONE]."""
    received = ""
    async with asyncio.timeout(TIMEOUT):
        stream = await client.chat.completions.create(
            model="mock-error", messages=MESSAGES, stream=True
        )

        async def consume() -> None:
            nonlocal received
            async for c in stream:
                received += c.choices[0].delta.content or ""

        with pytest.raises(openai.APIError) as info:
            await consume()
        events, _ = await raw_events(
            session, mock.url, {"model": "mock-error", "messages": MESSAGES, "stream": True}
        )
    assert type(info.value) is openai.APIError
    assert info.value.message == "The server had an error while processing your request."
    assert info.value.code == "server_error"
    assert info.value.type == "server_error"
    assert received == tokens(answer_text(PROMPT, 0), BROKEN_AFTER)
    assert json.loads(events[-1])["error"]["type"] == "server_error"
    assert "[DONE]" not in events


async def test_truncated_stream(
    client: openai.AsyncOpenAI, mock: Mock, session: aiohttp.ClientSession
) -> None:
    """mock-truncate: a few tokens, then the body ends with no finish_reason and no [DONE]."""
    async with asyncio.timeout(TIMEOUT):
        stream = await client.chat.completions.create(
            model="mock-truncate", messages=MESSAGES, stream=True
        )
        chunks = [c async for c in stream]
        events, status = await raw_events(
            session, mock.url, {"model": "mock-truncate", "messages": MESSAGES, "stream": True}
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == tokens(answer_text(PROMPT, 0), BROKEN_AFTER)
    assert all(c.choices[0].finish_reason is None for c in chunks)
    assert status == 200
    assert "[DONE]" not in events
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in events)


async def test_rate_limit_429(client: openai.AsyncOpenAI, mock: Mock) -> None:
    """mock-429: the SDK raises RateLimitError, with retry-after and OpenAI's error code."""
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="mock-429", messages=MESSAGES, stream=True)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.message.endswith("Rate limit reached for requests")
    assert mock.stats.requests == 1


async def test_server_error_500(client: openai.AsyncOpenAI, mock: Mock) -> None:
    """mock-500: the SDK raises InternalServerError; the request still counts."""
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(openai.InternalServerError) as info:
            await client.chat.completions.create(model="mock-500", messages=MESSAGES)
    assert info.value.status_code == 500
    assert info.value.type == "server_error"
    assert mock.stats.requests == 1
    assert mock.stats.last_request is not None
    assert mock.stats.last_request["model"] == "mock-500"


async def test_broken_scenarios_without_streaming(
    mock: Mock, session: aiohttp.ClientSession
) -> None:
    """Non-streaming mock-error is a 500 and mock-truncate a body cut mid-JSON."""
    body: dict[str, Any] = {"model": "mock-error", "messages": MESSAGES}
    async with asyncio.timeout(TIMEOUT):
        async with session.post(f"{mock.url}/chat/completions", json=body) as resp:
            error = (resp.status, await resp.json())
        body["model"] = "mock-truncate"
        async with session.post(f"{mock.url}/chat/completions", json=body) as resp:
            cut = (resp.status, await resp.text())
    assert error[0] == 500
    assert error[1]["error"]["code"] == "server_error"
    assert cut[0] == 200
    assert cut[1].startswith('{"id": "chatcmpl-mock-2"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut[1])


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"model": "mock"}',
        b'{"model": "mock", "messages": "hi"}',
        b'{"model": "mock", "messages": []}',
        b'{"model": "mock", "messages": [{"content": "no role"}]}',
        b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}',
        b'{"messages": [{"role": "user", "content": "x"}], "n": 0}',
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}',
    ],
)
async def test_bad_request_400(aiohttp_client: AiohttpClient, body: bytes) -> None:
    """Unparseable or invalid bodies get an OpenAI-style 400 invalid_request_error."""
    app = create_mock_app(MockSettings(tokens_per_second=0, ttft=0))
    test_client = await aiohttp_client(app)
    async with asyncio.timeout(TIMEOUT):
        resp = await test_client.post(
            "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        payload = await resp.json()
    assert resp.status == 400
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (None, None)
    assert isinstance(error["message"], str)
    assert error["message"]
    assert app[MOCK_STATS].requests == 1


async def test_api_key_enforced(start_mock: MockFactory, session: aiohttp.ClientSession) -> None:
    """With api_key set, a wrong or missing bearer token gets 401 invalid_api_key."""
    mock = await start_mock(api_key="sk-right")
    async with asyncio.timeout(TIMEOUT):
        async with sdk(mock.url, api_key="sk-wrong") as wrong:
            with pytest.raises(openai.AuthenticationError) as info:
                await wrong.chat.completions.create(model="mock", messages=MESSAGES)
            with pytest.raises(openai.AuthenticationError):
                await wrong.models.list()
        async with session.post(f"{mock.url}/chat/completions", json={}) as resp:
            missing = (resp.status, await resp.json())
        async with sdk(mock.url, api_key="sk-right") as right:
            reply = await right.chat.completions.create(model="mock", messages=MESSAGES)
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong" not in info.value.message
    assert missing[0] == 401
    assert missing[1]["error"]["code"] == "invalid_api_key"
    assert reply.choices[0].message.content == answer_text(PROMPT, 0)
    assert mock.stats.requests == 3


async def test_models_list(client: openai.AsyncOpenAI, mock: Mock) -> None:
    """GET /v1/models lists every scenario model, through the SDK's pager."""
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*/v1", mock.url)
    async with asyncio.timeout(TIMEOUT):
        models = [m async for m in client.models.list()]
    assert [m.id for m in models] == list(MODELS)
    assert {m.id for m in models} >= {
        "mock",
        "mock-tools",
        "mock-reasoning",
        "mock-refusal",
        "mock-error",
        "mock-truncate",
        "mock-429",
        "mock-500",
    }
    assert {(m.object, m.owned_by) for m in models} == {("model", "fanout-mock")}
    assert len({m.created for m in models}) == 1
    assert mock.stats.models_requests == 1
    assert mock.stats.requests == 0


async def _read_then_hang_up(resp: aiohttp.ClientResponse) -> None:
    """Read up to the first content token, then drop the connection."""
    while True:
        line = await resp.content.readline()
        assert line, "the stream ended before the client could hang up"
        if b'"content":"Mock"' in line:
            break
    resp.close()


async def _wait_for_disconnect(stats: MockStats) -> None:
    """Poll, for at most two seconds, until the mock has counted a disconnect."""
    for _ in range(200):
        if stats.disconnects:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the mock never noticed the client hanging up")


@pytest.mark.parametrize("cancelling", [False, True], ids=["app-runner", "handler-cancellation"])
async def test_client_disconnect_counted(
    cancelling: bool,
    start_mock: MockFactory,
    aiohttp_client: AiohttpClient,
    session: aiohttp.ClientSession,
) -> None:
    """A client hanging up mid-stream counts as a disconnect, with or without cancellation."""
    body = {"model": "mock", "messages": MESSAGES, "stream": True}
    async with asyncio.timeout(TIMEOUT):
        if cancelling:
            # The test server cancels handlers when their client goes away.
            app = create_mock_app(MockSettings(tokens_per_second=20, ttft=0))
            stats = app[MOCK_STATS]
            test_client = await aiohttp_client(app)
            await _read_then_hang_up(await test_client.post("/v1/chat/completions", json=body))
        else:
            # A plain AppRunner does not: the next write notices instead.
            mock = await start_mock(tokens_per_second=20)
            stats = mock.stats
            resp = await session.post(f"{mock.url}/chat/completions", json=body)
            await _read_then_hang_up(resp)
        await _wait_for_disconnect(stats)
    assert (stats.requests, stats.disconnects) == (1, 1)


@pytest.mark.usefixtures("mock")
async def test_unpaced_answer_is_fast(client: openai.AsyncOpenAI) -> None:
    """tokens_per_second=0 and ttft=0: a whole streamed answer arrives at once."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT):
        started = loop.time()
        stream = await client.chat.completions.create(model="mock", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        elapsed = loop.time() - started
    assert text == answer_text(PROMPT, 0)
    assert elapsed < 0.5


async def test_ttft_and_pacing(start_mock: MockFactory) -> None:
    """The ttft option delays the first token and tokens_per_second spaces the rest out."""
    ttft, tps, count = 0.2, 100.0, 10
    mock = await start_mock(tokens_per_second=tps, ttft=ttft)
    loop = asyncio.get_running_loop()
    arrivals = []
    async with asyncio.timeout(TIMEOUT), sdk(mock.url) as client:
        started = loop.time()
        stream = await client.chat.completions.create(
            model="mock", messages=MESSAGES, stream=True, max_tokens=count
        )
        async for c in stream:
            if c.choices[0].delta.content:
                arrivals.append(loop.time() - started)
        started = loop.time()
        await client.chat.completions.create(model="mock", messages=MESSAGES)
        non_stream = loop.time() - started
    assert len(arrivals) == count
    # A little slack below: the server's clock started a moment after ours.
    assert arrivals[0] >= ttft - 0.02
    assert arrivals[-1] >= ttft + (count - 1) / tps - 0.02
    assert arrivals[-1] < ttft + (count - 1) / tps + 1.0
    assert non_stream >= ttft - 0.02


async def test_long_model_sends_n_tokens(client: openai.AsyncOpenAI) -> None:
    """mock-long-N streams exactly N content tokens; bare mock-long the default; max_tokens cuts."""
    async with asyncio.timeout(TIMEOUT):
        counts = []
        for model, limit in (("mock-long-300", None), ("mock-long", None), ("mock-long-9", 4)):
            stream = await client.chat.completions.create(
                model=model, messages=MESSAGES, stream=True, max_tokens=limit
            )
            chunks = [c async for c in stream]
            pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
            counts.append((len(pieces), chunks[-1].choices[0].finish_reason))
            if model == "mock-long-300":
                text = "".join(p or "" for p in pieces)
    assert counts == [(300, "stop"), (LONG_DEFAULT_TOKENS, "stop"), (4, "length")]
    assert text == "".join(long_tokens(300))
    assert text.startswith("The café")
    assert len(set(text.split())) > 50


async def test_stamp_model_carries_send_times(start_mock: MockFactory) -> None:
    """mock-stamp-N: each token is the wall-clock time it was sent, paced by tokens_per_second."""
    mock = await start_mock(tokens_per_second=200.0)
    body = {"model": "mock-stamp-20", "messages": MESSAGES, "stream": True}
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as session:
        before = time.time()
        events, _ = await raw_events(session, mock.url, body)
        after = time.time()
        non_stream = {"model": "mock-stamp-3", "messages": MESSAGES}
        async with session.post(f"{mock.url}/chat/completions", json=non_stream) as resp:
            reply = await resp.json()
    pieces = [json.loads(e)["choices"][0]["delta"].get("content") for e in events if e != "[DONE]"]
    stamps = [float(p) for p in pieces if p]
    assert all(re.fullmatch(r" \d+\.\d{6}", p) for p in pieces if p)
    assert len(stamps) == 20
    assert before <= stamps[0] <= stamps[-1] <= after
    assert stamps == sorted(stamps)
    assert stamps[-1] - stamps[0] >= 19 / 200.0 - 0.01
    content = reply["choices"][0]["message"]["content"]
    assert len(content.split()) == 3
    assert all(before <= float(s) <= time.time() for s in content.split())


async def test_stats_endpoint_counts_requests(mock: Mock, session: aiohttp.ClientSession) -> None:
    """GET /v1/_stats reports the requests, disconnects and model listings the mock counted."""
    async with asyncio.timeout(TIMEOUT):
        body = {"model": "mock-long-5", "messages": MESSAGES, "stream": True}
        for _ in range(2):
            await raw_events(session, mock.url, body)
        async with session.get(f"{mock.url}/models") as resp:
            assert resp.status == 200
        async with session.get(f"{mock.url}/_stats") as resp:
            counts = await resp.json()
    assert counts == {
        "requests": 2,
        "disconnects": 0,
        "models_requests": 1,
        "responses_creates": 0,
        "responses_retrieves": 0,
        "responses_cancels": 0,
        "last_starting_after": None,
    }


async def test_flood_model_ignores_pacing(start_mock: MockFactory) -> None:
    """mock-flood-N sends N chunks of about 1 kB at once on a slow mock; mock-long stays paced."""
    mock = await start_mock(tokens_per_second=20.0)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as session:
        timings = {}
        for model in ("mock-flood-40", "mock-long-8"):
            started = loop.time()
            body = {"model": model, "messages": MESSAGES, "stream": True}
            events, _ = await raw_events(session, mock.url, body)
            timings[model] = loop.time() - started
            pieces = [
                json.loads(e)["choices"][0]["delta"].get("content") for e in events if e != "[DONE]"
            ]
            if model == "mock-flood-40":
                text = "".join(p for p in pieces if p)
    assert text == "".join(flood_tokens(40))
    assert len(text) == 40 * FLOOD_CHUNK_CHARS
    assert len(set(text.split())) > 50
    assert timings["mock-flood-40"] < 0.5
    assert timings["mock-long-8"] >= 7 / 20.0 - 0.02
