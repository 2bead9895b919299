"""Rooms on a Responses API upstream (``upstream.api = "responses"``), the real mock behind them.

Every scenario of the mock reaches two viewers, a late joiner and a resumer as one turn, from
one ``POST /v1/responses``; the room's history and the prompt's options reach the upstream
under their Responses names, an option the API lacks is refused before any request, and HTTP
errors end the turn failed as they do on a chat upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.tools.mock_scenarios import (
    BROKEN_AFTER,
    REFUSAL,
    THOUGHT,
    TOOL_ARGUMENTS,
    answer_text,
    tokenize,
)
from server.tools.rebuild import TurnText

from .conftest import Mock, MockFactory, ServerFactory, post_prompt, viewer
from .room_health import room_turn, snapshot_text
from .viewer import Viewer, sequenced

PROMPT = "Quelle est la météo à Paris aujourd'hui, s'il te plaît ?"
ANSWER = answer_text(PROMPT, 0)


def first_tokens(text: str, count: int) -> str:
    """The first ``count`` tokens of ``text``, as the mock cuts an answer."""
    return "".join(tokenize(text)[:count])


@pytest.fixture
def start_paced(start_mock: MockFactory) -> MockFactory:
    """Mock upstreams paced like a model (150 tokens/s), so a turn can be joined midway."""

    async def start(**overrides: Any) -> Mock:
        return await start_mock(**{"tokens_per_second": 150.0, "ttft": 0.05, **overrides})

    return start


async def responses_server(make_server: ServerFactory, mock: Mock, **overrides: Any) -> TestServer:
    """A fanout server whose upstream is ``mock``, called with the Responses API."""
    return await make_server(upstream__base_url=mock.url, upstream__api="responses", **overrides)


@dataclass(frozen=True)
class Scenario:
    """What a mock model makes of PROMPT: the one choice, how the turn ends, the pace to send it.

    The pace stretches short answers over about half a second, so that the late joiner and
    the resumer really come and go while the turn streams.
    """

    model: str
    status: str
    finish_reason: str | None
    content: str = ""
    reasoning: str = ""
    refusal: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    tokens_per_second: float = 150.0

    def choice(self) -> dict[str, Any]:
        """The choice as ``TurnText.choices`` rebuilds it (a snapshot's, less finish_reason)."""
        return {
            "index": 0,
            "content": self.content,
            "reasoning": self.reasoning,
            "refusal": self.refusal,
            "tool_calls": self.tool_calls,
        }


CUT = first_tokens(ANSWER, BROKEN_AFTER)
SCENARIOS = [
    Scenario("mock", "completed", "stop", content=ANSWER),
    Scenario(
        "mock-tools",
        "completed",
        "tool_calls",
        tool_calls=[
            {"index": 0, "id": "call_mock_1", "name": "get_weather", "arguments": TOOL_ARGUMENTS}
        ],
        tokens_per_second=25.0,
    ),
    Scenario("mock-reasoning", "completed", "stop", content=ANSWER, reasoning=THOUGHT),
    Scenario("mock-refusal", "completed", "stop", refusal=REFUSAL, tokens_per_second=20.0),
    Scenario(
        "mock-error", "failed", None, content=CUT, error="server_error", tokens_per_second=10.0
    ),
    Scenario("mock-truncate", "truncated", None, content=CUT, tokens_per_second=10.0),
    Scenario("mock-incomplete", "completed", "length", content=CUT, tokens_per_second=10.0),
]


def grown(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the delta frames among ``frames`` add up to, choice by choice."""
    turn = TurnText(keep=True)
    for frame in frames:
        if frame["type"] == "delta":
            turn.apply_choices(frame["choices"])
    return turn.choices()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.model for s in SCENARIOS])
async def test_every_scenario_reaches_every_kind_of_viewer_as_one_turn(
    scenario: Scenario,
    start_paced: MockFactory,
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
) -> None:
    """Two viewers, a late joiner and a resumer rebuild the scenario's turn from one request."""
    mock = await start_paced(tokens_per_second=scenario.tokens_per_second)
    server = await responses_server(make_server, mock)
    room = f"r-{scenario.model}"
    a = await viewer(session, server, room)
    b = await viewer(session, server, room)
    resumer = await viewer(session, server, room)
    await a.send({"type": "prompt", "content": PROMPT, "id": "p-1", "model": scenario.model})
    await a.wait(lambda v: any(f["type"] == "delta" for f in v.frames))
    await resumer.close()
    left_at, seen = resumer.seq, len(resumer.frames)
    late = await viewer(session, server, room)
    await a.wait(lambda v: v.seq > left_at)  # the turn went on while the resumer was away
    await resumer.resume()
    viewers = (a, b, late, resumer)
    for v in viewers:
        turn = await v.wait_turn_end()
        assert turn.choices() == [scenario.choice()]
        assert turn.status == scenario.status
        assert turn.end is not None
        assert turn.end["choices"] == [{"index": 0, "finish_reason": scenario.finish_reason}]
        assert (turn.end["error"] or {}).get("code") == scenario.error
        assert v.problems == []
        assert v.errors == []
    # The late joiner came mid-stream: its snapshot holds the turn still streaming.
    snapshot = late.frames[1]
    assert snapshot["type"] == "snapshot"
    assert [t["status"] for t in snapshot["turns"]] == ["streaming"]
    # The resumer got exactly what it missed, and no snapshot.
    welcome, *replayed = resumer.frames[seen:]
    assert welcome["type"] == "welcome"
    assert welcome["recovered"] is True
    stream = sequenced(replayed, 0)
    assert stream[0].get("first_seq", stream[0]["seq"]) == left_at + 1
    assert any(f["type"] == "delta" for f in stream)
    assert grown(stream) == grown(sequenced(a.frames, left_at))
    # Everyone saw the turn the room keeps.
    start = next(f for f in a.frames if f["type"] == "turn.start")
    assert start["model"] == scenario.model
    kept = await room_turn(session, server, room, start["turn"])
    assert kept["status"] == scenario.status
    assert snapshot_text(kept) == [scenario.choice()]
    assert (mock.stats.responses_creates, mock.stats.requests) == (1, 0)
    for v in viewers:
        await v.close()


async def ask(v: Viewer, content: str, prompt_id: str, **extra: Any) -> TurnText:
    """Send a prompt from ``v``; the turn it started, once ended (no error may come back)."""

    def starts(x: Viewer) -> list[dict[str, Any]]:
        return [f for f in x.frames if f["type"] == "turn.start"]

    before = len(starts(v))
    await v.send({"type": "prompt", "content": content, "id": prompt_id, **extra})
    await v.wait(lambda x: bool(x.errors) or len(starts(x)) > before)
    assert v.errors == [], v.errors
    return await v.wait_turn_end(starts(v)[-1]["turn"])


async def test_the_rooms_history_goes_as_instructions_and_input(
    start_paced: MockFactory, make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A second prompt carries the first exchange before it; another room's turns stay out."""
    mock = await start_paced()
    server = await responses_server(make_server, mock, upstream__system_prompt="Sois bref.")
    a = await viewer(session, server, "history")
    first = await ask(a, "Première question ?", "p-1")
    assert first.text() == answer_text("Première question ?", 0)
    assert mock.stats.last_request is not None
    assert mock.stats.last_request["input"] == [{"role": "user", "content": "Première question ?"}]
    second = await ask(a, "Et la deuxième ?", "p-2")
    assert second.text() == answer_text("Et la deuxième ?", 0)
    body = mock.stats.last_request
    assert body["instructions"] == "Sois bref."
    assert body["input"] == [
        {"role": "user", "content": "Première question ?"},
        {"role": "assistant", "content": first.text()},
        {"role": "user", "content": "Et la deuxième ?"},
    ]
    assert body["stream"] is True
    assert "background" not in body
    other = await viewer(session, server, "elsewhere")
    await ask(other, "Une autre salle ?", "p-3")
    assert mock.stats.last_request["input"] == [{"role": "user", "content": "Une autre salle ?"}]
    assert mock.stats.responses_creates == 3
    for v in (a, other):
        await v.close()


async def test_options_reach_the_upstream_under_their_responses_names(
    start_paced: MockFactory, make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """max_tokens, reasoning_effort and a chat-shaped tool arrive as the Responses API wants."""
    mock = await start_paced()
    server = await responses_server(make_server, mock)
    a = await viewer(session, server, "options")

    limited = await ask(a, PROMPT, "p-1", options={"max_tokens": 5})
    assert mock.stats.last_request is not None
    assert mock.stats.last_request["max_output_tokens"] == 5
    assert "max_tokens" not in mock.stats.last_request
    assert limited.text() == first_tokens(ANSWER, 5)
    assert limited.status == "completed"
    assert limited.end is not None
    assert limited.end["choices"] == [{"index": 0, "finish_reason": "length"}]

    thought = await ask(
        a, PROMPT, "p-2", model="mock-reasoning", options={"reasoning_effort": "low"}
    )
    assert mock.stats.last_request["reasoning"] == {"effort": "low"}
    assert "reasoning_effort" not in mock.stats.last_request
    assert thought.text(name="reasoning") == THOUGHT

    tool = {"type": "function", "function": {"name": "lookup_forecast", "parameters": {}}}
    called = await ask(a, PROMPT, "p-3", model="mock-tools", options={"tools": [tool]})
    assert mock.stats.last_request["tools"] == [
        {"type": "function", "name": "lookup_forecast", "parameters": {}, "strict": False}
    ]
    [choice] = called.choices()
    assert [(c["name"], c["arguments"]) for c in choice["tool_calls"]] == [
        ("lookup_forecast", TOOL_ARGUMENTS)
    ]
    assert mock.stats.responses_creates == 3
    await a.close()


@pytest.mark.parametrize(
    ("name", "value"), [("n", 2), ("stop", ["END"]), ("seed", 7)], ids=["n", "stop", "seed"]
)
async def test_an_option_the_responses_api_lacks_is_refused_before_any_request(
    name: str,
    value: object,
    start_paced: MockFactory,
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
) -> None:
    """bad_request names the option (WebSocket, with the prompt's ref; POST, 400); room goes on."""
    mock = await start_paced()
    server = await responses_server(make_server, mock)
    a = await viewer(session, server, "refuse")
    await a.send({"type": "prompt", "content": PROMPT, "id": "p-bad", "options": {name: value}})
    await a.wait(lambda v: bool(v.errors))
    [error] = a.errors
    assert error["code"] == "bad_request"
    assert error["ref"] == "p-bad"
    assert f"'{name}'" in error["message"]
    assert "Responses API" in error["message"]

    status, body = await post_prompt(session, server, "refuse", options={name: value})
    assert status == 400
    assert body["error"]["code"] == "bad_request"
    assert f"'{name}'" in body["error"]["message"]

    assert mock.stats.responses_creates == 0
    assert mock.stats.requests == 0
    assert not any(f["type"] == "turn.start" for f in a.frames)
    # The room still takes a viewer and completes a prompt, from the viewer that was refused.
    late = await viewer(session, server, "refuse")
    assert [f["type"] for f in late.frames[:2]] == ["welcome", "snapshot"]
    assert late.frames[1]["turns"] == []
    a.errors.clear()
    turn = await ask(a, PROMPT, "p-good")
    assert (turn.status, turn.text()) == ("completed", ANSWER)
    assert (await late.wait_turn_end()).text() == ANSWER
    assert mock.stats.responses_creates == 1
    for v in (a, late):
        await v.close()


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize(
    ("model", "code"), [("mock-429", "rate_limit_exceeded"), ("mock-500", "server_error")]
)
async def test_http_errors_fail_the_turn_as_on_a_chat_upstream(
    api: str,
    model: str,
    code: str,
    start_paced: MockFactory,
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
) -> None:
    """mock-429 and mock-500 end the turn failed with their code, no delta, on either API."""
    mock = await start_paced()
    server = await make_server(upstream__base_url=mock.url, upstream__api=api)
    a = await viewer(session, server, "errors")
    await a.send({"type": "prompt", "content": PROMPT, "id": "p-1", "model": model})
    turn = await a.wait_turn_end()
    assert turn.status == "failed"
    assert turn.end is not None
    assert turn.end["error"]["code"] == code
    assert turn.end["usage"] is None
    assert [f["type"] for f in sequenced(a.frames, 0)] == ["turn.start", "turn.end"]
    assert a.errors == []
    made = {"chat": mock.stats.requests, "responses": mock.stats.responses_creates}
    assert made == {"chat": int(api == "chat"), "responses": int(api == "responses")}
    await a.close()
