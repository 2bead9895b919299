"""The OpenAI-compatible tap: SDK clients get the upstream's answer, the room watches it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from .conftest import API_KEY, viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, chunk, text_stream, usage_chunk

FULL = "".join(ANSWER)


@pytest.fixture
async def client(server: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK pointed at the server's tap, room 'tap' by default."""
    sdk = openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")),
        api_key="caller-key",
        max_retries=0,
        default_headers={"X-Room": "tap"},
        http_client=openai.DefaultAioHttpClient(),
    )
    yield sdk
    await sdk.close()


async def test_streaming_sdk_call_is_watched_by_the_room(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    client: openai.AsyncOpenAI,
) -> None:
    """A streaming SDK call gets exactly the text a WebSocket viewer of the room rebuilt."""
    watcher = await viewer(session, server, "tap")
    stream = await client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi there"}], stream=True
    )
    pieces, usages, finish = [], [], None
    async for part in stream:
        usages.append(part.usage)
        for choice in part.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    turn = await watcher.wait_turn_end()
    assert "".join(pieces) == turn.text() == FULL
    assert finish == "stop"
    assert usages == [None] * len(usages)  # the caller did not ask for usage
    assert turn.end is not None
    assert turn.end["usage"]["total_tokens"] == 30  # the room got it anyway
    start = next(f for f in watcher.frames if f["type"] == "turn.start")
    assert start["prompt"] == "hi there"
    assert start["model"] == "gpt-test"
    assert len(upstream.requests) == 1
    sent = upstream.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": "hi there"}]
    assert sent["_headers"]["authorization"] == f"Bearer {API_KEY}"
    await watcher.close()


async def test_caller_that_asks_for_usage_gets_the_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    """stream_options.include_usage from the caller passes the usage chunk through."""
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    last = None
    async for part in stream:
        last = part
    assert last is not None
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.total_tokens == 30


async def test_non_streaming_call_gets_one_completion_object(
    server: TestServer, session: aiohttp.ClientSession, client: openai.AsyncOpenAI
) -> None:
    """A non-streaming call gets one chat.completion while the room watches it stream."""
    watcher = await viewer(session, server, "tap")
    result = await client.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    )
    assert result.object == "chat.completion"
    assert result.choices[0].message.content == FULL
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.total_tokens == 30
    assert (await watcher.wait_turn_end()).text() == FULL
    await watcher.close()


async def test_tool_calls_through_the_tap(
    upstream: FakeUpstream, client: openai.AsyncOpenAI
) -> None:
    """Tool-call fragments reach the caller and assemble into the full arguments."""
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    frags = ['{"city"', ': "Par', 'is"}']
    upstream.always(
        Script(
            chunks=[
                chunk(role="assistant", tool_calls=[call]),
                *[chunk(tool_calls=[{"index": 0, "function": {"arguments": f}}]) for f in frags],
                chunk(finish="tool_calls"),
                usage_chunk(),
                "data: [DONE]\n\n",
            ]
        )
    )
    result = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    )
    calls = result.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert result.choices[0].finish_reason == "tool_calls"
    assert "tools" in upstream.requests[0]


async def test_upstream_429_reaches_the_caller_with_its_status(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    client: openai.AsyncOpenAI,
) -> None:
    """An upstream 429 comes back as 429 with the upstream's error JSON, scrubbed."""
    upstream.always(
        Script(
            status=429,
            headers={"retry-after": "2"},
            error_body={
                "error": {
                    "message": f"Rate limit reached for key {API_KEY}",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
        )
    )
    watcher = await viewer(session, server, "tap")
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert API_KEY not in str(caught.value.body)
    assert caught.value.response.headers["retry-after"] == "2"
    turn = await watcher.wait_turn_end()
    assert turn.status == "failed"
    assert turn.end is not None
    assert turn.end["error"]["code"] == "rate_limit_exceeded"
    await watcher.close()


async def test_tap_turns_are_not_room_history(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    client: openai.AsyncOpenAI,
) -> None:
    """A later room prompt's history skips tap turns (the tap caller sends its own)."""
    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
    watcher = await viewer(session, server, "tap")
    await watcher.send({"type": "prompt", "content": "b"})
    await watcher.wait(lambda v: len(v.turns) == 2 and all(t.end for t in v.turns.values()))
    assert [m["role"] for m in upstream.requests[1]["messages"]] == ["system", "user"]
    await watcher.close()


async def test_models_are_passed_through(client: openai.AsyncOpenAI) -> None:
    """GET /v1/models lists the upstream's models, so SDK clients that list models work."""
    page = await client.models.list()
    assert [m.id for m in page.data] == ["fake-model"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"model": "m", "messages": [{"role": "user", "content": "x"}]}, 400),
        ({"X-Room": "-bad"}, {"model": "m", "messages": [{"role": "user", "content": "x"}]}, 400),
        ({"X-Room": "r"}, {"model": "m", "messages": []}, 400),
        ({"X-Room": "r"}, {"model": 3, "messages": [{"role": "user", "content": "x"}]}, 400),
        ({"X-Room": "r"}, {"messages": [{"role": "user", "content": "x"}], "stream": "y"}, 400),
    ],
)
async def test_bad_tap_requests_are_400(
    server: TestServer,
    session: aiohttp.ClientSession,
    upstream: FakeUpstream,
    headers: dict[str, str],
    body: dict[str, object],
    status: int,
) -> None:
    """No X-Room, a bad room, no messages or wrong types: 400 JSON and no upstream request."""
    resp = await session.post(server.make_url("/v1/chat/completions"), json=body, headers=headers)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == "bad_request"
    assert upstream.requests == []


async def test_tap_while_a_turn_streams_is_409(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """A tap request in a room that is streaming gets 409 turn_in_progress."""
    upstream.always(Script(chunks=text_stream(ANSWER * 30), gap=0.02))
    watcher = await viewer(session, server, "busy")
    await watcher.send({"type": "prompt", "content": "long"})
    await watcher.wait(lambda v: any(f["type"] == "delta" for f in v.frames))
    resp = await session.post(
        server.make_url("/v1/chat/completions"),
        headers={"X-Room": "busy"},
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
    )
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "turn_in_progress"
    await watcher.close()


NODE_DIR = Path(__file__).resolve().parents[1] / "node"


async def test_openai_npm_package_streams_through_the_tap(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """The official openai npm package (Node) gets exactly the text a room viewer rebuilt."""
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run `make test` (npm ci tests/node)"
    watcher = await viewer(session, server, "node")
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "tap_stream.mjs"),
        str(server.make_url("/v1")),
        "node",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    turn = await watcher.wait_turn_end()
    assert result["text"] == turn.text() == FULL
    assert result["finish_reason"] == "stop"
    await watcher.close()
