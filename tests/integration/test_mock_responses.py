"""The mock upstream's Responses API, over real sockets, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pytest_aiohttp import AiohttpClient

from server.tools.mock_scenarios import (
    BROKEN_AFTER,
    FLOOD_CHUNK_CHARS,
    REFUSAL,
    THOUGHT,
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
    start_mock_upstream,
)

from .conftest import Mock, MockFactory, sdk

TIMEOUT = 5.0
PROMPT = "Quelle est la météo à Paris aujourd'hui, s'il te plaît ?"
WEATHER = {"city": "Paris", "unit": "celsius"}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


@pytest.fixture
async def mock(start_mock: MockFactory) -> Mock:
    """One fast mock upstream."""
    return await start_mock()


@pytest.fixture
async def client(mock: Mock) -> AsyncIterator[openai.AsyncOpenAI]:
    """An SDK client of ``mock``."""
    async with sdk(mock.url) as c:
        yield c


async def stream_events(client: openai.AsyncOpenAI, **params: Any) -> list[ResponseStreamEvent]:
    """Every event of a streamed create."""
    stream = await client.responses.create(input=params.pop("input", PROMPT), stream=True, **params)
    return [e async for e in stream]


def deltas(events: Sequence[ResponseStreamEvent], kind: str) -> str:
    """The joined ``delta`` of every event of type ``kind``."""
    return "".join(getattr(e, "delta", "") for e in events if e.type == kind)


def text_of(events: Sequence[ResponseStreamEvent]) -> str:
    """The answer text rebuilt from the output_text deltas."""
    return deltas(events, "response.output_text.delta")


def first_tokens(text: str, limit: int) -> str:
    """The first ``limit`` tokens of text, joined."""
    return "".join(tokenize(text)[:limit])


def assert_numbered(events: Sequence[ResponseStreamEvent], first: int = 0) -> None:
    """Sequence numbers count up by one from ``first``."""
    assert [e.sequence_number for e in events] == list(range(first, first + len(events)))


def final(events: Sequence[ResponseStreamEvent]) -> Response:
    """The Response the terminal event carries."""
    last = events[-1]
    assert last.type in TERMINAL
    response: Response = last.response  # type: ignore[union-attr]
    return response


async def test_stream_events_in_order(client: openai.AsyncOpenAI, mock: Mock) -> None:
    """mock: OpenAI's event sequence, numbered from 0, text and usage as for chat."""
    async with asyncio.timeout(TIMEOUT):
        events = await stream_events(client, model="mock")
    expected = answer_text(PROMPT, 0)
    count = len(tokenize(expected))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * count,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert_numbered(events)
    assert text_of(events) == expected
    created = events[0].response  # type: ignore[union-attr]
    assert (created.status, created.output, created.object) == ("in_progress", [], "response")
    response = final(events)
    assert re.fullmatch(r"resp_\w+", response.id)
    assert {e.response.id for e in events if hasattr(e, "response")} == {response.id}
    assert response.status == "completed"
    assert response.output_text == expected
    [message] = response.output
    assert message.type == "message"
    assert message.status == "completed"
    assert message.id.startswith("msg_")
    item_ids = {getattr(e, "item_id", message.id) for e in events[2:-1]}
    assert item_ids == {message.id}
    assert response.usage is not None
    assert response.usage.output_tokens == count
    assert response.usage.total_tokens == response.usage.input_tokens + count > count
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert (mock.stats.responses_creates, mock.stats.requests) == (1, 0)
    assert mock.stats.last_request is not None
    assert mock.stats.last_request["input"] == PROMPT


async def test_raw_stream_is_named_events_without_done(mock: Mock) -> None:
    """On the wire: an ``event:`` line naming each data payload's type, and no [DONE]."""
    body = {"model": "mock", "input": PROMPT, "stream": True}
    async with (
        asyncio.timeout(TIMEOUT),
        aiohttp.ClientSession() as session,
        session.post(f"{mock.url}/responses", json=body) as resp,
    ):
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = (await resp.read()).decode()
    frames = [f for f in text.split("\n\n") if f]
    assert text.endswith("\n\n")
    assert "[DONE]" not in text
    for frame in frames:
        event, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert event == f"event: {payload['type']}"
    assert any(ord(ch) > 127 for ch in text), "raw UTF-8, not \\u escapes"


async def test_same_answer_as_chat_for_input_items(client: openai.AsyncOpenAI) -> None:
    """Input items answer their last user message, as chat answers the same messages."""
    items: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "An earlier question"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
        {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Two"},
                {"type": "input_text", "text": "parts"},
            ],
        },
        {"role": "developer", "content": "Not a user message"},
    ]
    chat_messages: list[Any] = [{"role": "user", "content": "Two parts"}]
    async with asyncio.timeout(TIMEOUT):
        response = await client.responses.create(
            model="mock", input=items, instructions="Answer in French."
        )
        chat = await client.chat.completions.create(model="mock", messages=chat_messages)
        bare = await client.responses.create(model="mock", input="Two parts")
    assert response.status == "completed"
    assert response.object == "response"
    assert response.instructions == "Answer in French."
    assert response.output_text == answer_text("Two parts", 0)
    assert response.output_text == chat.choices[0].message.content == bare.output_text
    assert response.usage is not None
    assert bare.usage is not None
    assert response.usage.input_tokens > bare.usage.input_tokens


async def test_tool_call_stream(client: openai.AsyncOpenAI) -> None:
    """mock-tools: a function_call item, argument deltas that join into JSON, then done."""
    tool: Any = {"type": "function", "name": "lookup_forecast", "parameters": {"type": "object"}}
    async with asyncio.timeout(TIMEOUT):
        events = await stream_events(client, model="mock-tools", tools=[tool])
        reply = await client.responses.create(model="mock-tools", input=PROMPT)
    assert_numbered(events)
    added = events[2]
    assert added.type == "response.output_item.added"
    item = added.item
    assert item.type == "function_call"
    assert (item.name, item.arguments, item.call_id) == ("lookup_forecast", "", "call_mock_1")
    assert item.id is not None
    assert item.id.startswith("fc_")
    fragments = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(fragments) >= 3
    assert json.loads(deltas(events, "response.function_call_arguments.delta")) == WEATHER
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [json.loads(d.arguments) for d in done] == [WEATHER]
    assert [e.type for e in events[-2:]] == ["response.output_item.done", "response.completed"]
    [call] = final(events).output
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments), call.status) == (
        "lookup_forecast",
        WEATHER,
        "completed",
    )
    [plain] = reply.output
    assert plain.type == "function_call"
    assert (plain.name, json.loads(plain.arguments)) == ("get_weather", WEATHER)
    assert reply.output_text == ""


async def test_reasoning_summary_before_text(client: openai.AsyncOpenAI) -> None:
    """mock-reasoning: a reasoning item with summary deltas, then the message with the answer."""
    async with asyncio.timeout(TIMEOUT):
        events = await stream_events(client, model="mock-reasoning", reasoning={"effort": "low"})
        reply = await client.responses.create(model="mock-reasoning", input=PROMPT)
    assert_numbered(events)
    kinds = [e.type for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.reasoning_summary_part.added"]
    last_thought = max(i for i, k in enumerate(kinds) if k.startswith("response.reasoning"))
    first_text = kinds.index("response.output_text.delta")
    assert last_thought < first_text
    assert deltas(events, "response.reasoning_summary_text.delta") == THOUGHT
    assert text_of(events) == answer_text(PROMPT, 0)
    response = final(events)
    assert response.reasoning is not None
    assert response.reasoning.effort == "low"
    reasoning, message = response.output
    assert reasoning.type == "reasoning"
    assert reasoning.id.startswith("rs_")
    assert [s.text for s in reasoning.summary] == [THOUGHT]
    assert message.type == "message"
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == len(tokenize(THOUGHT))
    assert reply.output[0].type == "reasoning"
    assert reply.output_text == answer_text(PROMPT, 0)


async def test_refusal_stream(client: openai.AsyncOpenAI) -> None:
    """mock-refusal: a refusal content part filled by refusal deltas, and no output text."""
    async with asyncio.timeout(TIMEOUT):
        events = await stream_events(client, model="mock-refusal")
        reply = await client.responses.create(model="mock-refusal", input=PROMPT)
    assert_numbered(events)
    part = events[3]
    assert part.type == "response.content_part.added"
    assert part.part.type == "refusal"
    assert sum(1 for e in events if e.type == "response.refusal.delta") > 1
    assert deltas(events, "response.refusal.delta") == REFUSAL
    assert [e.refusal for e in events if e.type == "response.refusal.done"] == [REFUSAL]
    assert text_of(events) == ""
    [message] = reply.output
    assert message.type == "message"
    [content] = message.content
    assert content.type == "refusal"
    assert content.refusal == REFUSAL
    assert reply.output_text == ""


async def test_error_event_then_failed(client: openai.AsyncOpenAI) -> None:
    """mock-error: a few deltas, an ``error`` event, then ``response.failed``; 500 unstreamed."""
    async with asyncio.timeout(TIMEOUT):
        events = await stream_events(client, model="mock-error")
        with pytest.raises(openai.InternalServerError) as info:
            await client.responses.create(model="mock-error", input=PROMPT)
    assert_numbered(events)
    assert text_of(events) == first_tokens(answer_text(PROMPT, 0), BROKEN_AFTER)
    error, failed = events[-2:]
    assert error.type == "error"
    assert (error.code, error.param) == ("server_error", None)
    assert error.message == "The server had an error while processing your request."
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    assert failed.response.error.code == "server_error"
    assert info.value.status_code == 500


async def test_truncated_stream_has_no_terminal_event(client: openai.AsyncOpenAI) -> None:
    """mock-truncate: a few deltas, then the body ends with no terminal or done event."""
    async with asyncio.timeout(TIMEOUT):
        events = await stream_events(client, model="mock-truncate")
    assert_numbered(events)
    assert events[-1].type == "response.output_text.delta"
    assert text_of(events) == first_tokens(answer_text(PROMPT, 0), BROKEN_AFTER)
    assert not any(e.type.endswith(".done") or e.type in TERMINAL for e in events)


async def test_incomplete_scenario_and_max_output_tokens(client: openai.AsyncOpenAI) -> None:
    """mock-incomplete and max_output_tokens end response.incomplete (max_output_tokens)."""
    answer = answer_text(PROMPT, 0)
    async with asyncio.timeout(TIMEOUT):
        scenario = await stream_events(client, model="mock-incomplete")
        limited = await stream_events(client, model="mock", max_output_tokens=7)
        reply = await client.responses.create(model="mock", input=PROMPT, max_output_tokens=3)
        chat = await client.chat.completions.create(
            model="mock-incomplete", messages=[{"role": "user", "content": PROMPT}]
        )
    for events, count in ((scenario, BROKEN_AFTER), (limited, 7)):
        assert_numbered(events)
        assert text_of(events) == first_tokens(answer, count)
        response = final(events)
        assert events[-1].type == "response.incomplete"
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.output[0].status == "incomplete"  # type: ignore[union-attr]
        assert response.usage is not None
        assert response.usage.output_tokens == count
    assert (reply.status, reply.output_text) == ("incomplete", first_tokens(answer, 3))
    assert limited[-1].response.max_output_tokens == 7  # type: ignore[union-attr]
    assert chat.choices[0].finish_reason == "length"
    assert chat.choices[0].message.content == first_tokens(answer, BROKEN_AFTER)


async def test_http_error_scenarios(client: openai.AsyncOpenAI, mock: Mock) -> None:
    """mock-429 and mock-500 fail before any event, as they do for chat; both count."""
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(openai.RateLimitError) as limited:
            await client.responses.create(model="mock-429", input=PROMPT, stream=True)
        with pytest.raises(openai.InternalServerError) as failed:
            await client.responses.create(model="mock-500", input=PROMPT, background=True)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.code == "rate_limit_exceeded"
    assert failed.value.status_code == 500
    assert mock.stats.responses_creates == 2


async def test_load_models(start_mock: MockFactory) -> None:
    """mock-long-N, mock-stamp-N and mock-flood-N send what they send to chat clients."""
    mock = await start_mock(tokens_per_second=1000.0)
    async with asyncio.timeout(TIMEOUT), sdk(mock.url) as client:
        long = await stream_events(client, model="mock-long-30")
        stamp = await stream_events(client, model="mock-stamp-5")
        flood = await stream_events(client, model="mock-flood-3")
    assert text_of(long) == "".join(long_tokens(30))
    pieces = [e.delta for e in stamp if e.type == "response.output_text.delta"]
    assert len(pieces) == 5
    assert all(re.fullmatch(r" \d+\.\d{6}", p) for p in pieces)
    assert [float(p) for p in pieces] == sorted(float(p) for p in pieces)
    assert final(stamp).output_text == "".join(pieces)
    assert text_of(flood) == "".join(flood_tokens(3))
    assert len(text_of(flood)) == 3 * FLOOD_CHUNK_CHARS


async def test_background_resume_after_drop(start_mock: MockFactory) -> None:
    """Background: drop the stream after a few events; resuming loses and repeats none."""
    mock = await start_mock(tokens_per_second=100.0)
    async with asyncio.timeout(TIMEOUT), sdk(mock.url) as client:
        stream = await client.responses.create(
            model="mock", input=PROMPT, stream=True, background=True
        )
        early = []
        async for event in stream:
            early.append(event)
            if event.type == "response.output_text.delta":
                break
        await stream.close()
        response_id = early[0].response.id  # type: ignore[union-attr]
        midway = await client.responses.retrieve(response_id)
        after = early[-1].sequence_number
        resumed = await client.responses.retrieve(response_id, stream=True, starting_after=after)
        rest = [e async for e in resumed]
        replay = await client.responses.retrieve(response_id, stream=True)
        everything = [e async for e in replay]
        done = await client.responses.retrieve(response_id)
    assert [e.type for e in early[:3]] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    assert early[0].response.status == "queued"  # type: ignore[union-attr]
    assert midway.status == "in_progress"
    assert len(midway.output_text) < len(answer_text(PROMPT, 0))
    assert_numbered(early)
    assert_numbered(rest, first=after + 1)
    assert text_of(early) + text_of(rest) == answer_text(PROMPT, 0)
    assert rest[-1].type == "response.completed"
    assert [e.model_dump() for e in everything] == [e.model_dump() for e in early + rest]
    assert done.status == "completed"
    assert done.background is True
    assert done.output_text == answer_text(PROMPT, 0)
    assert mock.stats.responses_retrieves == 4
    assert mock.stats.last_starting_after == after


async def test_background_without_streaming(client: openai.AsyncOpenAI, mock: Mock) -> None:
    """Background, no stream: the create returns a queued Response; the task finishes it."""
    async with asyncio.timeout(TIMEOUT):
        queued = await client.responses.create(model="mock-tools", input=PROMPT, background=True)
        stream = await client.responses.retrieve(queued.id, stream=True, starting_after=2)
        events = [e async for e in stream]
        done = await client.responses.retrieve(queued.id)
    assert (queued.status, queued.output, queued.background) == ("queued", [], True)
    assert_numbered(events, first=3)
    assert events[-1].type == "response.completed"
    assert done.status == "completed"
    [call] = done.output
    assert call.type == "function_call"
    assert json.loads(call.arguments) == WEATHER
    assert mock.stats.last_starting_after == 2


async def test_cancel_background(start_mock: MockFactory) -> None:
    """Cancel: the Response says cancelled, its live stream ends, a second cancel is a no-op."""
    mock = await start_mock(tokens_per_second=50.0)
    async with asyncio.timeout(TIMEOUT), sdk(mock.url) as client:
        created = await client.responses.create(
            model="mock-long-500", input=PROMPT, background=True
        )
        stream = await client.responses.retrieve(created.id, stream=True)
        seen = []
        cancelled = None
        async for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta" and cancelled is None:
                cancelled = await client.responses.cancel(created.id)  # once: deltas in flight
    assert cancelled is not None
    async with asyncio.timeout(TIMEOUT), sdk(mock.url) as client:
        again = await client.responses.cancel(created.id)
        later = await client.responses.retrieve(created.id)
    assert cancelled.status == "cancelled"
    assert again.status == later.status == "cancelled"
    assert_numbered(seen)
    assert not any(e.type in TERMINAL for e in seen)
    assert len(text_of(seen).split()) < 100, "the stream ended long before the answer"
    assert later.output_text == text_of(seen)
    assert mock.stats.responses_cancels == 2


async def test_cancel_refusals(client: openai.AsyncOpenAI, mock: Mock) -> None:
    """Cancel is a 400 for a foreground or finished response, and a 404 for an unknown id."""
    async with asyncio.timeout(TIMEOUT):
        foreground = await client.responses.create(model="mock", input=PROMPT)
        background = await client.responses.create(model="mock", input=PROMPT, background=True)
        stream = await client.responses.retrieve(background.id, stream=True)
        assert [e async for e in stream][-1].type == "response.completed"
        with pytest.raises(openai.BadRequestError) as synchronous:
            await client.responses.cancel(foreground.id)
        with pytest.raises(openai.BadRequestError) as finished:
            await client.responses.cancel(background.id)
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.responses.cancel("resp_nope")
    assert synchronous.value.message.endswith("Cannot cancel a synchronous response.")
    assert finished.value.message.endswith("Cannot cancel a completed response.")
    assert unknown.value.status_code == 404
    assert mock.stats.responses_cancels == 3


async def test_retrieve_refusals(client: openai.AsyncOpenAI) -> None:
    """404 for unknown and unstored ids; 400 for streaming a foreground response again."""
    async with asyncio.timeout(TIMEOUT):
        unstored = await client.responses.create(model="mock", input=PROMPT, store=False)
        stored = await client.responses.create(model="mock", input=PROMPT)
        kept = await client.responses.retrieve(stored.id)
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.responses.retrieve("resp_nope")
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(unstored.id)
        with pytest.raises(openai.BadRequestError):
            await client.responses.retrieve(stored.id, stream=True)
    assert (unstored.model_extra or {}).get("store") is False
    assert kept.model_dump() == stored.model_dump()
    assert unknown.value.message.endswith("Response with id 'resp_nope' not found.")
    assert unknown.value.type == "invalid_request_error"


async def test_store_is_bounded(start_mock: MockFactory) -> None:
    """Beyond stored_responses the oldest go; past stored_seconds ended ones go too."""
    counted = await start_mock(stored_responses=2)
    aged = await start_mock(stored_seconds=0.0)
    async with asyncio.timeout(TIMEOUT), sdk(counted.url) as client, sdk(aged.url) as other:
        ids = [(await client.responses.create(model="mock", input=PROMPT)).id for _ in range(3)]
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(ids[0])
        kept = [(await client.responses.retrieve(i)).id for i in ids[1:]]
        old = await other.responses.create(model="mock", input=PROMPT)
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(old.id)
    assert kept == ids[1:]


async def test_api_key_enforced(start_mock: MockFactory) -> None:
    """With api_key set, every Responses endpoint answers a wrong key with 401."""
    mock = await start_mock(api_key="sk-right")
    async with asyncio.timeout(TIMEOUT), sdk(mock.url, "sk-right") as right:
        created = await right.responses.create(model="mock", input=PROMPT, background=True)
        async with sdk(mock.url, "sk-wrong") as wrong:
            calls = (
                wrong.responses.create(model="mock", input=PROMPT),
                wrong.responses.retrieve(created.id),
                wrong.responses.cancel(created.id),
            )
            for call in calls:
                with pytest.raises(openai.AuthenticationError) as info:
                    await call
                assert info.value.code == "invalid_api_key"
        stream = await right.responses.retrieve(created.id, stream=True)
        assert [e async for e in stream][-1].type == "response.completed"
    counts = mock.stats.counts()
    assert (counts["responses_creates"], counts["responses_retrieves"]) == (2, 2)
    assert counts["responses_cancels"] == 1


async def test_stats_endpoint_reports_responses(start_mock: MockFactory) -> None:
    """GET /v1/_stats reports the Responses counters next to chat's."""
    mock = await start_mock(tokens_per_second=20.0)
    async with asyncio.timeout(TIMEOUT), sdk(mock.url) as client:
        created = await client.responses.create(model="mock", input=PROMPT, background=True)
        stream = await client.responses.retrieve(created.id, stream=True, starting_after=4)
        await stream.close()
        await client.responses.cancel(created.id)
        async with aiohttp.ClientSession() as session, session.get(f"{mock.url}/_stats") as resp:
            counts = await resp.json()
    assert counts == {
        "requests": 0,
        "disconnects": counts["disconnects"],
        "models_requests": 0,
        "responses_creates": 1,
        "responses_retrieves": 1,
        "responses_cancels": 1,
        "last_starting_after": 4,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "could not parse"),
        (b"[]", "JSON object"),
        (b'{"model": "mock"}', "'input'"),
        (b'{"input": 7}', "'input'"),
        (b'{"input": []}', "'input'"),
        (b'{"input": ["hi"]}', "'input[0]'"),
        (b'{"input": [{"role": "robot", "content": "x"}]}', "'input[0].role'"),
        (b'{"input": [{"role": "user", "content": 3}]}', "'input[0].content'"),
        (b'{"input": [{"role": "user", "content": [{"text": "x"}]}]}', "'input[0].content'"),
        (b'{"input": [{"type": 5}]}', "'input[0].type'"),
        (b'{"input": "x", "model": 7}', "'model'"),
        (b'{"input": "x", "instructions": ["x"]}', "'instructions'"),
        (b'{"input": "x", "stream": "yes"}', "'stream'"),
        (b'{"input": "x", "max_output_tokens": 0}', "'max_output_tokens'"),
        (b'{"input": "x", "reasoning": "high"}', "'reasoning'"),
        (b'{"input": "x", "tools": {"type": "function"}}', "'tools'"),
        (b'{"input": "x", "background": true, "store": false}', "'store'"),
    ],
)
async def test_bad_request_400(aiohttp_client: AiohttpClient, body: bytes, message: str) -> None:
    """Invalid bodies get an OpenAI-style 400 naming what is wrong, and still count."""
    app = create_mock_app(MockSettings(tokens_per_second=0, ttft=0))
    test_client = await aiohttp_client(app)
    async with asyncio.timeout(TIMEOUT):
        resp = await test_client.post(
            "/v1/responses", data=body, headers={"Content-Type": "application/json"}
        )
        payload = await resp.json()
    assert resp.status == 400
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert app[MOCK_STATS].responses_creates == 1


@pytest.mark.parametrize(
    "query", ["stream=yes", "stream=true&starting_after=-1", "starting_after=x"]
)
async def test_bad_retrieve_query_400(aiohttp_client: AiohttpClient, query: str) -> None:
    """A retrieval with a malformed stream or starting_after is a 400."""
    test_client = await aiohttp_client(create_mock_app(MockSettings(tokens_per_second=0, ttft=0)))
    async with asyncio.timeout(TIMEOUT):
        created = await test_client.post("/v1/responses", json={"input": "x", "background": True})
        response_id = (await created.json())["id"]
        resp = await test_client.get(f"/v1/responses/{response_id}?{query}")
        payload = await resp.json()
    assert resp.status == 400
    assert payload["error"]["type"] == "invalid_request_error"


async def _wait_for_disconnects(stats: MockStats, count: int) -> None:
    """Poll, for at most two seconds, until the mock has counted ``count`` disconnects."""
    for _ in range(200):
        if stats.disconnects >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the mock counted {stats.disconnects} disconnects, not {count}")


async def test_hang_ups_counted(start_mock: MockFactory) -> None:
    """Dropping a foreground or a background stream counts as a disconnect; nothing else does."""
    mock = await start_mock(tokens_per_second=100.0)
    async with asyncio.timeout(TIMEOUT), sdk(mock.url) as client:
        for count, background in enumerate((False, True), start=1):
            stream = await client.responses.create(
                model="mock", input=PROMPT, stream=True, background=background
            )
            async for event in stream:
                if event.type == "response.output_text.delta":
                    break
            await stream.close()
            await _wait_for_disconnects(mock.stats, count)
        events = await stream_events(client, model="mock-long-3")
    assert events[-1].type == "response.completed"
    assert mock.stats.disconnects == 2


async def test_shutdown_ends_live_background_streams() -> None:
    """Shutting the mock down stops background producers and ends the streams following them."""
    settings = MockSettings(tokens_per_second=20.0, ttft=0.0)
    runner, url = await start_mock_upstream("127.0.0.1", 0, settings)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(TIMEOUT), sdk(url) as client:
            created = await client.responses.create(
                model="mock-long-500", input=PROMPT, background=True
            )
            stream = await client.responses.retrieve(created.id, stream=True)
            seen = [await anext(aiter(stream))]
            started = loop.time()
            cleanup = asyncio.create_task(runner.cleanup())
            seen += [e async for e in stream]
            await cleanup
            elapsed = loop.time() - started
    finally:
        await runner.cleanup()
    assert seen[0].type == "response.created"
    assert not any(e.type in TERMINAL for e in seen)
    assert len(seen) < 100
    assert elapsed < 1.0
