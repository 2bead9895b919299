"""The Responses API tap: SDK callers get what the upstream sent, the room watches the same turn.

Real servers on 127.0.0.1: fanout pointed at the built-in mock upstream, whose scenarios
(by model name) give every ending a Responses stream can have.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseIncompleteEvent,
    ResponseStreamEvent,
)

from server.tools.mock_upstream import MOCK_STATS, MockSettings, MockStats, start_mock_upstream
from tests.integration.conftest import ServerFactory, viewer
from tests.integration.fake_upstream import FakeUpstream, Script
from tests.integration.viewer import Viewer

TIMEOUT = 15.0
NODE_DIR = Path(__file__).resolve().parents[1] / "node"
TRUNCATED = "the upstream's answer ended before it was complete"
PROMPT = "Quelle est la météo à Paris ? Réponds en deux mots 🚀"

# scenario -> (the room's turn status, its finish reason, the SDK's final status or None)
SCENARIOS: dict[str, tuple[str, str | None, str | None]] = {
    "mock": ("completed", "stop", "completed"),
    "mock-tools": ("completed", "tool_calls", "completed"),
    "mock-reasoning": ("completed", "stop", "completed"),
    "mock-refusal": ("completed", "stop", "completed"),
    "mock-incomplete": ("completed", "length", "incomplete"),
    "mock-error": ("failed", None, None),
    "mock-truncate": ("truncated", None, None),
}


@pytest.fixture
async def mock_stats() -> AsyncIterator[tuple[str, MockStats]]:
    """The built-in mock upstream, unpaced: its base URL and counters."""
    runner, url = await start_mock_upstream("127.0.0.1", 0, MockSettings(0.0, 0.0))
    yield url, runner.app[MOCK_STATS]
    await runner.cleanup()


@pytest.fixture
async def tap(make_server: ServerFactory, mock_stats: tuple[str, MockStats]) -> TestServer:
    """Fanout streaming from the mock upstream."""
    return await make_server(upstream__base_url=mock_stats[0])


@pytest.fixture
async def client(tap: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK pointed at the tap; each test names its room per call."""
    sdk = openai.AsyncOpenAI(
        base_url=str(tap.make_url("/v1")),
        api_key="caller-key",
        max_retries=0,
        http_client=openai.DefaultAioHttpClient(),
    )
    yield sdk
    await sdk.close()


def room_of(model: str, stream: bool) -> dict[str, str]:
    """A room of its own for one call, as the ``X-Room`` header."""
    return {"X-Room": f"{model}-{'s' if stream else 'n'}"}


def event_texts(events: Sequence[ResponseStreamEvent]) -> dict[str, Any]:
    """What a streaming caller rebuilt: text, refusal, reasoning, and each call's arguments."""

    def joined(*kinds: str) -> str:
        return "".join(getattr(e, "delta", "") for e in events if e.type in kinds)

    calls = [
        (e.item.call_id, e.item.name)
        for e in events
        if e.type == "response.output_item.added" and e.item.type == "function_call"
    ]
    return {
        "content": joined("response.output_text.delta"),
        "refusal": joined("response.refusal.delta"),
        "reasoning": joined(
            "response.reasoning_summary_text.delta", "response.reasoning_text.delta"
        ),
        "calls": [(*c, joined("response.function_call_arguments.delta")) for c in calls],
    }


def response_texts(response: Response) -> dict[str, Any]:
    """What a non-streaming caller got, in the shape of ``event_texts``."""
    refusal, reasoning, calls = "", "", []
    for item in response.output:
        if item.type == "message":
            refusal += "".join(p.refusal for p in item.content if p.type == "refusal")
        elif item.type == "reasoning":
            reasoning += "".join(s.text for s in item.summary)
            reasoning += "".join(c.text for c in item.content or ())
        elif item.type == "function_call":
            calls.append((item.call_id, item.name, item.arguments))
    return {
        "content": response.output_text,
        "refusal": refusal,
        "reasoning": reasoning,
        "calls": calls,
    }


def viewer_texts(watcher: Viewer, turn_id: str) -> dict[str, Any]:
    """What a WebSocket viewer rebuilt of the turn, in the shape of ``event_texts``."""
    (choice,) = watcher.turns[turn_id].choices()
    return {
        "content": choice["content"],
        "refusal": choice["refusal"],
        "reasoning": choice["reasoning"],
        "calls": [(c["id"], c["name"], c["arguments"]) for c in choice["tool_calls"]],
    }


async def watched_turn(watcher: Viewer) -> tuple[str, dict[str, Any]]:
    """The id and ``turn.end`` frame of the one turn the viewer saw start and end."""
    turn = await watcher.wait_turn_end()
    (start,) = [f for f in watcher.frames if f["type"] == "turn.start"]
    assert start["prompt"] == PROMPT
    assert turn.end is not None
    return start["turn"], turn.end


@pytest.mark.parametrize("model", list(SCENARIOS))
async def test_streaming_sdk_caller_and_viewer_rebuild_the_same_turn(
    tap: TestServer,
    session: aiohttp.ClientSession,
    client: openai.AsyncOpenAI,
    mock_stats: tuple[str, MockStats],
    model: str,
) -> None:
    """responses.create(stream=True): the SDK's events rebuild exactly the viewer's turn."""
    status, finish, final = SCENARIOS[model]
    stats = mock_stats[1]
    async with asyncio.timeout(TIMEOUT):
        watcher = await viewer(session, tap, room_of(model, True)["X-Room"])
        stream = await client.responses.create(
            model=model, input=PROMPT, stream=True, extra_headers=room_of(model, True)
        )
        events = [e async for e in stream]
        turn_id, end = await watched_turn(watcher)
    assert stats.responses_creates == 1
    assert event_texts(events) == viewer_texts(watcher, turn_id)
    assert (end["status"], end["choices"][0]["finish_reason"]) == (status, finish)
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers))
    last = events[-1]
    if final is not None:
        assert isinstance(last, ResponseCompletedEvent | ResponseIncompleteEvent)
        assert last.type == f"response.{final}"
        assert last.response.status == final
        assert end["error"] is None
    else:  # the failure: the room's error, or for a truncation the tap's upstream_error
        assert isinstance(last, ResponseErrorEvent)
        error = end["error"] or {"code": "upstream_error", "message": TRUNCATED}
        assert (last.code, last.message) == (error["code"], error["message"])
    await watcher.close()


@pytest.mark.parametrize("model", list(SCENARIOS))
async def test_non_streaming_sdk_caller_gets_the_final_response_the_viewer_saw(
    tap: TestServer,
    session: aiohttp.ClientSession,
    client: openai.AsyncOpenAI,
    mock_stats: tuple[str, MockStats],
    model: str,
) -> None:
    """responses.create(): the final Response (or the error) of the one turn the room watched."""
    status, finish, final = SCENARIOS[model]
    stats = mock_stats[1]
    async with asyncio.timeout(TIMEOUT):
        watcher = await viewer(session, tap, room_of(model, False)["X-Room"])
        if final is not None:
            response = await client.responses.create(
                model=model, input=PROMPT, extra_headers=room_of(model, False)
            )
        else:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.responses.create(
                    model=model, input=PROMPT, extra_headers=room_of(model, False)
                )
        turn_id, end = await watched_turn(watcher)
    assert stats.responses_creates == 1
    assert stats.last_request is not None
    assert stats.last_request["stream"] is True  # the room watches live
    assert (end["status"], end["choices"][0]["finish_reason"]) == (status, finish)
    if final is not None:
        assert response.status == final
        assert response_texts(response) == viewer_texts(watcher, turn_id)
        assert response.usage is not None
        assert response.usage.total_tokens == end["usage"]["total_tokens"]
    else:
        assert caught.value.status_code == 502
        assert caught.value.code == "upstream_error"
        if end["error"] is not None:
            assert end["error"]["message"] in caught.value.message
    await watcher.close()


async def test_background_is_passed_through(
    tap: TestServer,
    session: aiohttp.ClientSession,
    client: openai.AsyncOpenAI,
    mock_stats: tuple[str, MockStats],
) -> None:
    """background: true goes upstream as the caller asked; the caller still gets the answer."""
    async with asyncio.timeout(TIMEOUT):
        watcher = await viewer(session, tap, "bg")
        stream = await client.responses.create(
            model="mock",
            input=PROMPT,
            stream=True,
            background=True,
            extra_headers={"X-Room": "bg"},
        )
        events = [e async for e in stream]
        turn_id, end = await watched_turn(watcher)
    assert mock_stats[1].last_request is not None
    assert mock_stats[1].last_request["background"] is True
    assert event_texts(events) == viewer_texts(watcher, turn_id)
    assert end["status"] == "completed"
    await watcher.close()


async def test_sdk_stream_helper_gets_its_final_response(
    tap: TestServer, session: aiohttp.ClientSession, client: openai.AsyncOpenAI
) -> None:
    """responses.stream(): the SDK's helper finds the terminal event and builds the Response."""
    async with asyncio.timeout(TIMEOUT):
        watcher = await viewer(session, tap, "helper")
        async with client.responses.stream(
            model="mock-tools",
            input=[{"role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
            tools=[{"type": "function", "name": "get_weather", "parameters": {}, "strict": False}],
            extra_headers={"X-Room": "helper"},
        ) as stream:
            response = await stream.get_final_response()
        turn_id, end = await watched_turn(watcher)
    assert response_texts(response) == viewer_texts(watcher, turn_id)
    assert end["choices"][0]["finish_reason"] == "tool_calls"
    await watcher.close()


@pytest.mark.parametrize(("model", "stream"), [("mock", True), ("mock", False)])
async def test_openai_npm_package_through_the_responses_tap(
    tap: TestServer,
    session: aiohttp.ClientSession,
    mock_stats: tuple[str, MockStats],
    model: str,
    stream: bool,
) -> None:
    """The openai npm package (Node), streaming and not, gets exactly the viewer's text."""
    assert (NODE_DIR / "node_modules" / "openai").is_dir(), "run `make test` (npm ci tests/node)"
    room = room_of("node", stream)["X-Room"]
    watcher = await viewer(session, tap, room)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "tap_responses.mjs"),
        str(tap.make_url("/v1")),
        room,
        model,
        "stream" if stream else "once",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    turn = await watcher.wait_turn_end()
    assert result["text"] == turn.text()
    assert result["text"]
    assert result["status"] == "completed"
    assert turn.status == "completed"
    assert (result["events"] > 0) is stream
    assert mock_stats[1].responses_creates == 1
    (start,) = [f for f in watcher.frames if f["type"] == "turn.start"]
    assert start["prompt"] == "hello from node"
    await watcher.close()


@pytest.mark.parametrize("configured", ["chat", "responses"])
async def test_each_tap_calls_the_endpoint_of_its_own_api(
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
    upstream: FakeUpstream,
    configured: str,
) -> None:
    """upstream.api is for room prompts: each tap calls its own API's endpoint, whatever it says."""
    server = await make_server(upstream__api=configured)
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with session.post(
        server.make_url("/v1/chat/completions"), json=chat, headers={"X-Room": "a"}
    ) as resp:
        assert resp.status == 200, await resp.text()
    upstream.always(Script(status=418, error_body={"error": {"message": "no", "code": "teapot"}}))
    async with session.post(
        server.make_url("/v1/responses"), json={"input": "x"}, headers={"X-Room": "a"}
    ) as resp:
        assert resp.status == 418
    assert [r["_path"] for r in upstream.requests] == ["/v1/chat/completions", "/v1/responses"]
