"""ResponsesAccumulator: a table of Responses API events -> deltas, views, ending, usage."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.messages import (
    ChoiceDelta,
    ChoiceView,
    ErrorInfo,
    ToolCallDelta,
    ToolCallView,
    TurnEnding,
)
from server.core.responses_stream import ResponsesAccumulator, chat_usage

CD = ChoiceDelta
TC = ToolCallDelta
SECRET = "hunter2secret"
USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 20,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 30,
}
CHAT_USAGE = {
    "prompt_tokens": 10,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens": 20,
    "completion_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 30,
}


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    """A Responses stream event of this type (no sequence_number: see ``numbered``)."""
    return {"type": kind, **fields}


def numbered(*events: dict[str, Any]) -> list[dict[str, Any]]:
    """The events with sequence numbers 0, 1, 2... as OpenAI sends them."""
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


def text(kind: str, delta: object, item: str = "msg_1") -> dict[str, Any]:
    """A text delta event of ``kind`` for one output item."""
    return ev(kind, item_id=item, output_index=0, content_index=0, delta=delta, logprobs=[])


def fc_added(item: str = "fc_1", call: str = "call_1", name: str = "f", out: int = 1) -> Any:
    """``response.output_item.added`` for a function-call item."""
    raw = {"id": item, "type": "function_call", "call_id": call, "name": name, "arguments": ""}
    return ev("response.output_item.added", output_index=out, item=raw)


def args(delta: object, item: object = "fc_1", out: object = 1) -> dict[str, Any]:
    """``response.function_call_arguments.delta``."""
    return ev("response.function_call_arguments.delta", item_id=item, output_index=out, delta=delta)


def done(kind: str = "response.completed", **response: Any) -> dict[str, Any]:
    """A terminal event whose ``response`` has these fields."""
    return ev(kind, response={"id": "resp_1", "object": "response", **response})


def view(
    content: str = "",
    reasoning: str = "",
    refusal: str = "",
    tools: tuple[ToolCallView, ...] = (),
    finish: str | None = None,
) -> ChoiceView:
    """Choice 0's view with defaults for what a case does not care about."""
    return ChoiceView(0, content, reasoning, refusal, tools, finish)


def call(index: int, arguments: str, cid: str | None = "call_1", name: str | None = "f") -> Any:
    """A tool call's view."""
    return ToolCallView(index, cid, name, arguments)


OUT_TEXT = "response.output_text.delta"
MESSAGE_ITEM = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}

# (events in order, what each feed returns, final views, ending)
Case = tuple[list[Any], list[tuple[ChoiceDelta, ...]], tuple[ChoiceView, ...], TurnEnding | None]
CASES: dict[str, Case] = {
    "output-text": (
        [
            ev("response.created", response={"id": "resp_1", "status": "in_progress"}),
            ev("response.output_item.added", output_index=0, item=MESSAGE_ITEM),
            ev("response.content_part.added", item_id="msg_1", part={"type": "output_text"}),
            text(OUT_TEXT, "Hel"),
            text(OUT_TEXT, "lo"),
            ev("response.output_text.done", item_id="msg_1", text="Hello"),
            ev("response.output_item.done", output_index=0, item=MESSAGE_ITEM),
            done(status="completed"),
        ],
        [(), (), (), (CD(0, content="Hel"),), (CD(0, content="lo"),), (), (), ()],
        (view(content="Hello", finish="stop"),),
        TurnEnding("completed"),
    ),
    "refusal": (
        [text("response.refusal.delta", "No"), done()],
        [(CD(0, refusal="No"),), ()],
        (view(refusal="No", finish="stop"),),
        TurnEnding("completed"),
    ),
    "reasoning-summary-and-text": (
        [
            text("response.reasoning_summary_text.delta", "Think", item="rs_1"),
            text("response.reasoning_text.delta", "ing", item="rs_1"),
        ],
        [(CD(0, reasoning="Think"),), (CD(0, reasoning="ing"),)],
        (view(reasoning="Thinking"),),
        None,
    ),
    "function-call": (
        [fc_added(), args('{"ci'), args('ty":1}'), done(output=[{"type": "function_call"}])],
        [
            (CD(0, tool_calls=(TC(0, "call_1", "f"),)),),
            (CD(0, tool_calls=(TC(0, arguments='{"ci'),)),),
            (CD(0, tool_calls=(TC(0, arguments='ty":1}'),)),),
            (),
        ],
        (view(tools=(call(0, '{"city":1}'),), finish="tool_calls"),),
        TurnEnding("completed"),
    ),
    "two-calls-interleaved-numbered-in-order": (
        [
            fc_added("fc_b", "call_b", "g", out=3),
            fc_added("fc_a", "call_a", "f", out=1),
            args("A", item="fc_a", out=1),
            args("B", item="fc_b", out=3),
            args("a", item="fc_a", out=1),
            done(),
        ],
        [
            (CD(0, tool_calls=(TC(0, "call_b", "g"),)),),
            (CD(0, tool_calls=(TC(1, "call_a", "f"),)),),
            (CD(0, tool_calls=(TC(1, arguments="A"),)),),
            (CD(0, tool_calls=(TC(0, arguments="B"),)),),
            (CD(0, tool_calls=(TC(1, arguments="a"),)),),
            (),
        ],
        (
            view(
                tools=(call(0, "B", "call_b", "g"), call(1, "Aa", "call_a", "f")),
                finish="tool_calls",
            ),
        ),
        TurnEnding("completed"),
    ),
    "arguments-matched-by-output-index": (
        [fc_added(), args("x", item=None, out=1), args("y", item="other", out=1)],
        [
            (CD(0, tool_calls=(TC(0, "call_1", "f"),)),),
            (CD(0, tool_calls=(TC(0, arguments="x"),)),),
            (CD(0, tool_calls=(TC(0, arguments="y"),)),),
        ],
        (view(tools=(call(0, "xy"),)),),
        None,
    ),
    "arguments-naming-nothing-go-to-the-newest-call": (
        [fc_added("fc_1", "c1", out=1), fc_added("fc_2", "c2", out=2), args("z", None, None)],
        [
            (CD(0, tool_calls=(TC(0, "c1", "f"),)),),
            (CD(0, tool_calls=(TC(1, "c2", "f"),)),),
            (CD(0, tool_calls=(TC(1, arguments="z"),)),),
        ],
        (view(tools=(call(0, "", "c1"), call(1, "z", "c2"))),),
        None,
    ),
    "arguments-before-any-call-start-one": (
        [args("{", None, None), args("}", "fc_9", 5), fc_added("fc_9", "c9", "h", out=5)],
        [
            (CD(0, tool_calls=(TC(0, arguments="{"),)),),
            (CD(0, tool_calls=(TC(1, arguments="}"),)),),
            (CD(0, tool_calls=(TC(1, "c9", "h"),)),),
        ],
        (view(tools=(call(0, "{", None, None), call(1, "}", "c9", "h"))),),
        None,
    ),
    "item-with-arguments-and-repeated-announcement": (
        [
            ev(
                "response.output_item.added",
                output_index=0,
                item={"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f"}
                | {"arguments": "{}"},
            ),
            fc_added("fc_1", "other", "other", out=0),
        ],
        [(CD(0, tool_calls=(TC(0, "c", "f", "{}"),)),), ()],
        (view(tools=(call(0, "{}", "c", "f"),)),),
        None,
    ),
    "item-without-id-found-by-position": (
        [
            ev("response.output_item.added", output_index=2, item={"type": "function_call"}),
            ev(
                "response.output_item.added",
                output_index=2,
                item={"type": "function_call", "call_id": "c", "name": "f"},
            ),
            args("1", item=None, out=2),
        ],
        [(), (CD(0, tool_calls=(TC(0, "c", "f"),)),), (CD(0, tool_calls=(TC(0, arguments="1"),)),)],
        (view(tools=(call(0, "1", "c", "f"),)),),
        None,
    ),
    "completed-with-function-call-output-only": (
        [done(output=[{"type": "message"}, "junk", {"type": "function_call"}])],
        [()],
        (view(finish="tool_calls"),),
        TurnEnding("completed"),
    ),
    "completed-output-not-a-list": (
        [done(output="junk")],
        [()],
        (view(finish="stop"),),
        TurnEnding("completed"),
    ),
    "incomplete-max-output-tokens": (
        [
            text(OUT_TEXT, "cut"),
            done("response.incomplete", incomplete_details={"reason": "max_output_tokens"}),
        ],
        [(CD(0, content="cut"),), ()],
        (view(content="cut", finish="length"),),
        TurnEnding("completed"),
    ),
    "incomplete-content-filter": (
        [done("response.incomplete", incomplete_details={"reason": "content_filter"})],
        [()],
        (view(finish="content_filter"),),
        TurnEnding("completed"),
    ),
    "incomplete-other-reason-is-length": (
        [done("response.incomplete", incomplete_details={"reason": "max_messages"})],
        [()],
        (view(finish="length"),),
        TurnEnding("completed"),
    ),
    "incomplete-reason-not-a-string": (
        [done("response.incomplete", incomplete_details={"reason": 7})],
        [()],
        (view(finish="length"),),
        TurnEnding("completed"),
    ),
    "incomplete-without-details": (
        [done("response.incomplete", incomplete_details=None)],
        [()],
        (view(finish="length"),),
        TurnEnding("completed"),
    ),
    "failed": (
        [
            text(OUT_TEXT, "par"),
            done(
                "response.failed",
                error={"code": "server_error", "message": f"key {SECRET} sk-abcdefghijklmnop"},
            ),
        ],
        [(CD(0, content="par"),), ()],
        (view(content="par"),),
        TurnEnding("failed", ErrorInfo("server_error", "key [redacted] [redacted]")),
    ),
    "failed-without-error": (
        [done("response.failed", error="junk")],
        [()],
        (),
        TurnEnding("failed", ErrorInfo("upstream_error", "the upstream reported an error")),
    ),
    "error-event-top-level": (
        [ev("error", code="ERR_SOMETHING", message=f"bad {SECRET}", param=None)],
        [()],
        (),
        TurnEnding("failed", ErrorInfo("ERR_SOMETHING", "bad [redacted]")),
    ),
    "error-event-nested": (
        [ev("error", error={"type": "invalid_request_error", "message": "no", "code": None})],
        [()],
        (),
        TurnEnding("failed", ErrorInfo("invalid_request_error", "no")),
    ),
    "error-event-without-fields": (
        [ev("error")],
        [()],
        (),
        TurnEnding("failed", ErrorInfo("upstream_error", "the upstream reported an error")),
    ),
    "nothing-after-the-end": (
        [done(), text(OUT_TEXT, "late"), ev("error", code="x", message="y")],
        [(), (), ()],
        (view(finish="stop"),),
        TurnEnding("completed"),
    ),
    # Hostile shapes: skipped, never raised on.
    "wrong-types": (
        [
            text(OUT_TEXT, 5),
            text(OUT_TEXT, None),
            text(OUT_TEXT, ""),
            text(OUT_TEXT, ["a"]),
            args({"a": 1}),
            ev("response.output_item.added", item="junk"),
            ev("response.output_item.added"),
            ev("response.output_item.added", item={"type": "function_call", "call_id": 5}),
            args("", item=3, out=-1),
            {"type": 7, "delta": "x"},
            {"delta": "x"},
            ev("response.completed", response="junk"),
        ],
        [(), (), (), (), (), (), (), (), (), (), (), ()],
        (view(finish="tool_calls"),),
        TurnEnding("completed"),
    ),
    "lone-surrogates-and-huge-text-kept-as-given": (
        [text(OUT_TEXT, "x" * 100_000), text(OUT_TEXT, "é\U0001f600")],
        [(CD(0, content="x" * 100_000),), (CD(0, content="é\U0001f600"),)],
        (view(content="x" * 100_000 + "é\U0001f600"),),
        None,
    ),
}


@pytest.mark.parametrize(("events", "deltas", "views", "ending"), CASES.values(), ids=CASES.keys())
def test_mapping(
    events: list[Any],
    deltas: list[tuple[ChoiceDelta, ...]],
    views: tuple[ChoiceView, ...],
    ending: TurnEnding | None,
) -> None:
    """Each event sequence gives exactly these deltas, views and ending (numbered or not)."""
    for stream in (events, numbered(*events)):
        acc = ResponsesAccumulator(secrets=(SECRET,))
        assert [acc.feed(e) for e in stream] == deltas
        assert acc.views() == views
        assert acc.ending == ending
        assert acc.error == (None if ending is None else ending.error)
        assert acc.all_finished() is (ending is not None and ending.status == "completed")


@pytest.mark.parametrize(
    ("kind", "response", "usage"),
    [
        ("response.completed", {"usage": USAGE}, CHAT_USAGE),
        ("response.incomplete", {"usage": USAGE}, CHAT_USAGE),
        ("response.failed", {"usage": {"total_tokens": 3}}, {"total_tokens": 3}),
        ("response.completed", {"usage": None}, None),
        ("response.completed", {"usage": "junk"}, None),
        ("response.completed", {}, None),
    ],
    ids=["completed", "incomplete", "failed", "null", "junk", "missing"],
)
def test_usage_comes_from_the_terminal_event(
    kind: str, response: dict[str, Any], usage: dict[str, Any] | None
) -> None:
    """The terminal event's usage is kept under the chat names; null or junk keeps none."""
    acc = ResponsesAccumulator()
    acc.feed(ev("response.in_progress", response={"usage": {"input_tokens": 1}}))
    acc.feed(done(kind, **response))
    assert acc.usage == usage


def test_chat_usage_renames_and_passes_the_rest_through() -> None:
    """Responses names become the chat names (and win over chat names sent alongside)."""
    assert chat_usage({"input_tokens": 1, "prompt_tokens": 9, "extra": {"a": [1]}}) == {
        "prompt_tokens": 1,
        "extra": {"a": [1]},
    }
    assert chat_usage({}) == {}


def test_response_id_and_last_sequence_number_are_tracked() -> None:
    """response_id comes from any event's response.id; last_sequence_number is the highest."""
    acc = ResponsesAccumulator()
    assert (acc.response_id, acc.last_sequence_number) == (None, None)
    acc.feed(ev("response.created", sequence_number=0, response={"id": "resp_1"}))
    assert (acc.response_id, acc.last_sequence_number) == ("resp_1", 0)
    acc.feed(ev("response.in_progress", sequence_number=1, response={"id": 5}))
    acc.feed(ev("response.future.thing", sequence_number=7))
    assert (acc.response_id, acc.last_sequence_number) == ("resp_1", 7)
    acc.feed(ev("response.in_progress", sequence_number=8, response={"id": "resp_2"}))
    assert (acc.response_id, acc.last_sequence_number) == ("resp_2", 8)


def test_events_at_or_below_the_last_sequence_number_change_nothing() -> None:
    """A replay (re-attach) of numbered events adds no text; unnumbered ones are taken."""
    acc = ResponsesAccumulator()
    first = [acc.feed(e) for e in numbered(text(OUT_TEXT, "a"), text(OUT_TEXT, "b"))]
    assert first == [(CD(0, content="a"),), (CD(0, content="b"),)]
    assert acc.feed(text(OUT_TEXT, "a") | {"sequence_number": 0}) == ()
    assert acc.feed(text(OUT_TEXT, "b") | {"sequence_number": 1}) == ()
    assert acc.replayed == 2
    assert acc.feed(text(OUT_TEXT, "c") | {"sequence_number": 2}) == (CD(0, content="c"),)
    for bad in (None, True, -1, "3", 2.5):
        assert acc.feed(text(OUT_TEXT, "d") | {"sequence_number": bad}) == (CD(0, content="d"),)
    assert acc.last_sequence_number == 2
    assert acc.content() == "abcddddd"
    assert acc.replayed == 2


def test_unknown_types_and_bad_shapes_are_counted_as_skipped() -> None:
    """Unknown types and unusable fields count in ``skipped``; known quiet events do not."""
    acc = ResponsesAccumulator()
    for quiet in ("response.created", "response.content_part.done", "response.output_text.done"):
        acc.feed(ev(quiet))
    acc.feed(ev("response.output_item.added", item=MESSAGE_ITEM))
    acc.feed(text(OUT_TEXT, ""))
    assert acc.skipped == 0
    for odd in (ev("response.web_search_call.searching"), {}, text(OUT_TEXT, 1), args(None)):
        acc.feed(odd)
    acc.feed(ev("response.output_item.added", item=[1]))
    assert acc.skipped == 5
    assert acc.views() == ()


@pytest.mark.parametrize("value", [None, 0, 1.5, "str", [1, {"type": "error"}], True])
def test_any_json_value_that_is_no_object_is_skipped(value: object) -> None:
    """A value that is no object changes nothing and never raises."""
    acc = ResponsesAccumulator()
    assert acc.feed(value) == ()
    assert acc.feed(value, "response.output_text.delta") == ()
    assert (acc.skipped, acc.ending, acc.views()) == (2, None, ())


def test_the_sse_event_name_stands_in_for_a_missing_type() -> None:
    """Without a string ``type`` the SSE ``event:`` name decides; with one, the data does."""
    acc = ResponsesAccumulator()
    assert acc.feed({"delta": "a"}, OUT_TEXT) == (CD(0, content="a"),)
    assert acc.feed(text("response.refusal.delta", "b"), OUT_TEXT) == (CD(0, refusal="b"),)
    assert acc.feed({"code": "c", "message": "m"}, "error") == ()
    assert acc.ending == TurnEnding("failed", ErrorInfo("c", "m"))


def test_an_error_event_that_is_no_object_fails_the_turn() -> None:
    """``event: error`` with a bare JSON string fails with that string as the message."""
    acc = ResponsesAccumulator(secrets=(SECRET,))
    assert acc.feed(f"broken {SECRET}", "error") == ()
    assert acc.ending == TurnEnding("failed", ErrorInfo("upstream_error", "broken [redacted]"))


def test_parse_repairs_lone_surrogates_and_counts_them() -> None:
    """Parsed event text is valid: a lone surrogate becomes U+FFFD and counts as a repair."""
    acc = ResponsesAccumulator()
    event = acc.parse(json.dumps(text(OUT_TEXT, "a\ud800b")))
    assert acc.repairs == 1
    assert acc.feed(event) == (CD(0, content="a\ufffdb"),)
    assert acc.content() == "a\ufffdb"
