"""Turn and ChoiceStore: how each API's events end a turn; the shared text store."""

from __future__ import annotations

import json

import pytest

from server.core.accumulator import ChunkAccumulator
from server.core.choices import ChoiceStore, Text
from server.core.messages import (
    ChoiceDelta,
    ChoiceView,
    ErrorInfo,
    PromptRequest,
    ToolCallDelta,
    ToolCallView,
    TurnEnding,
)
from server.core.responses_stream import ResponsesAccumulator
from server.core.sse import SSEEvent
from server.core.turn import Turn
from server.core.types import TurnId, UpstreamApi

BAD_CHUNK = ErrorInfo("bad_chunk", "the upstream sent a chunk that is not JSON")
CHAT_TEXT = SSEEvent(json.dumps({"choices": [{"index": 0, "delta": {"content": "a"}}]}))
CHAT_STOP = SSEEvent(json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
RESP_TEXT = SSEEvent(json.dumps({"type": "response.output_text.delta", "delta": "a"}))
RESP_DONE = SSEEvent(json.dumps({"type": "response.completed", "response": {}}))


def turn(api: UpstreamApi) -> Turn:
    """A fresh streaming turn speaking ``api``, knowing the secret ``s3cr3t``."""
    return Turn(TurnId("t"), PromptRequest("q"), "m", 0.0, "room", 1, ("s3cr3t",), api)


@pytest.mark.parametrize(
    ("api", "events", "ending", "grown"),
    [
        ("chat", [CHAT_TEXT], None, 1),
        ("chat", [CHAT_TEXT, SSEEvent("[DONE]")], TurnEnding("truncated"), 1),
        ("chat", [CHAT_STOP, SSEEvent(" [DONE] ")], TurnEnding("completed"), 0),
        ("chat", [SSEEvent("{")], TurnEnding("failed", BAD_CHUNK), 0),
        ("chat", [SSEEvent("[" * 100_000)], TurnEnding("failed", BAD_CHUNK), 0),
        (
            "chat",
            [SSEEvent('{"message": "s3cr3t"}', "error")],
            TurnEnding("failed", ErrorInfo("upstream_error", "[redacted]")),
            0,
        ),
        (
            "chat",
            [SSEEvent('"boom"')],
            TurnEnding("failed", ErrorInfo("upstream_error", "boom")),
            0,
        ),
        (
            "chat",
            [SSEEvent('{"error": {"code": "c", "message": "m"}}')],
            TurnEnding("failed", ErrorInfo("c", "m")),
            0,
        ),
        ("responses", [RESP_TEXT], None, 1),
        ("responses", [RESP_TEXT, RESP_DONE], TurnEnding("completed"), 1),
        ("responses", [RESP_TEXT, SSEEvent("[DONE]")], TurnEnding("truncated"), 1),
        ("responses", [SSEEvent('"boom"')], None, 0),
        ("responses", [SSEEvent("{")], TurnEnding("failed", BAD_CHUNK), 0),
    ],
    ids=[
        "chat-text",
        "chat-done-unfinished",
        "chat-done-finished",
        "chat-not-json",
        "chat-too-deep",
        "chat-error-event",
        "chat-not-an-object",
        "chat-error-object",
        "responses-text",
        "responses-completed",
        "responses-stray-done",
        "responses-not-an-object",
        "responses-not-json",
    ],
)
def test_take(
    api: UpstreamApi, events: list[SSEEvent], ending: TurnEnding | None, grown: int
) -> None:
    """The event that ends a turn, per API; what grew before it is collected."""
    t = turn(api)
    collected: list[ChoiceDelta] = []
    endings = [t.take(e, collected) for e in events]
    assert endings[:-1] == [None] * (len(events) - 1)
    assert endings[-1] == ending
    assert len(collected) == grown


@pytest.mark.parametrize(
    ("api", "kind"), [("chat", ChunkAccumulator), ("responses", ResponsesAccumulator)]
)
def test_the_api_picks_the_accumulator(api: UpstreamApi, kind: type) -> None:
    """``api`` picks the accumulator; both keep their text in a ChoiceStore."""
    t = turn(api)
    assert type(t.acc) is kind
    assert isinstance(t.acc, ChoiceStore)
    assert t.api == api
    assert t.natural_status() == "truncated"
    assert t.position() is None


def test_a_store_applies_finishes_and_restores() -> None:
    """apply() appends and sets tool-call ids once; finish(None) clears nothing; restore()."""
    store = ChoiceStore()
    store.apply(ChoiceDelta(1, content="a", reasoning="r", refusal="n"))
    store.apply(ChoiceDelta(1, content="b", tool_calls=(ToolCallDelta(0, "c", "f", "{"),)))
    store.apply(ChoiceDelta(1, tool_calls=(ToolCallDelta(0, "x", "y", None),)))
    store.apply(ChoiceDelta(1, tool_calls=(ToolCallDelta(0, None, None, "}"),)))
    store.finish(1, "stop")
    store.finish(1, None)
    store.finish(0, None)
    view = ChoiceView(1, "ab", "r", "n", (ToolCallView(0, "c", "f", "{}"),), "stop")
    assert store.views() == (ChoiceView(0, "", "", "", (), None), view)
    assert store.finish_reasons() == ((0, None), (1, "stop"))
    assert not store.all_finished()
    assert (store.content(1), store.content(5)) == ("ab", "")
    again = ChoiceStore()
    assert not again.all_finished()
    again.restore(view)
    assert again.views() == (view,)
    assert again.all_finished()


def test_text_joins_lazily() -> None:
    """A Text reads '' empty, then every part in order, as often as asked."""
    text = Text()
    assert text.value() == ""
    for piece in "abc":
        text.append(piece)
    assert text.value() == text.value() == "abc"
