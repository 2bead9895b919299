"""The upstream repair rule: lone surrogates become U+FFFD, non-finite numbers are dropped."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.accumulator import ChunkAccumulator, error_info
from server.core.codec import to_wire
from server.core.messages import ChoiceDelta, ErrorInfo, PromptRequest, ToolCallDelta, TurnEnd
from server.core.repair import REPLACEMENT, load_json, repair_json, repair_text
from server.core.room import RoomState
from server.core.sse import SSEEvent
from server.core.types import RoomName, TurnId

R = REPLACEMENT


def strict_json(value: object) -> bytes:
    """JSON as strict UTF-8 with no NaN: raises on anything a repair should have removed."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode()


HUGE_INT = "9" * 5000  # longer than int() converts by default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("", ""),
        ("a\ud800b", f"a{R}b"),
        ("\udfff", R),
        ("\ud83d\ude80", R + R),  # a pair held as two code points is not text either
        ("caf\u00e9 \U0001f680", "caf\u00e9 \U0001f680"),
    ],
    ids=["plain", "empty", "high", "low", "split-pair", "astral"],
)
def test_repair_text(text: str, expected: str) -> None:
    """Every surrogate code point becomes U+FFFD; valid text is unchanged."""
    assert repair_text(text) == expected


LOADS: list[tuple[str, object, int]] = [
    ('{"a": 1, "b": [1.5, "x"]}', {"a": 1, "b": [1.5, "x"]}, 0),
    ('"\\ud83d\\ude80"', "\U0001f680", 0),  # a whole pair is one character
    ('"\\\\ud800"', "\\ud800", 0),  # an escaped backslash, not an escape
    ('"a\\ud800"', f"a{R}", 1),
    ('{"c": "\\uDFFF\\ud800"}', {"c": R + R}, 1),
    ('{"k\\ud800": "v"}', {f"k{R}": "v"}, 1),
    ('{"k\\ud800": "v\\ud800"}', {f"k{R}": f"v{R}"}, 2),
    ('{"a": 1e999, "b": 2}', {"b": 2}, 1),
    ('{"a": -1e999, "b": NaN, "c": Infinity, "d": -Infinity}', {}, 4),
    ('[1, NaN, 2, "\\ud800", [Infinity]]', [1, 2, R, []], 3),
    ('{"u": {"prompt_tokens": 1e999, "total": 3}}', {"u": {"total": 3}}, 1),
    (f'{{"a": {HUGE_INT}, "b": 1}}', {"b": 1}, 1),
    ("NaN", None, 1),
    ("1e999", None, 1),
    ("7", 7, 0),
    ("null", None, 0),
    ('{"x": [[["\\ud800"]]]}', {"x": [[[R]]]}, 1),
]


@pytest.mark.parametrize(("text", "expected", "repairs"), LOADS)
def test_load_json_repairs(text: str, expected: object, repairs: int) -> None:
    """Upstream JSON parses to valid text and finite numbers, with the count of repairs."""
    value, count = load_json(text)
    assert value == expected
    assert count == repairs
    strict_json(value)


def test_load_json_keeps_the_order_of_keys() -> None:
    """Repairing an object keeps its keys in the upstream's order."""
    value, _ = load_json('{"a": 1, "b\\ud800": 2, "c": NaN, "d": 4}')
    assert isinstance(value, dict)
    assert list(value) == ["a", f"b{R}", "d"]


def test_repair_json_walks_deep_nesting_without_recursion() -> None:
    """Nesting far deeper than the recursion limit is repaired (the walk uses a stack)."""
    depth = 5000
    value: Any = "\ud800"
    for _ in range(depth):
        value = [value]
    repaired, count = repair_json(value)
    assert count == 1
    for _ in range(depth):
        assert isinstance(repaired, list)
        repaired = repaired[0]
    assert repaired == R


@pytest.mark.parametrize(
    ("value", "expected", "repairs"),
    [
        ("ok", "ok", 0),
        ("\ud800", R, 1),
        (float("nan"), None, 1),
        (3, 3, 0),
        ({"a": float("inf"), "b": [float("-inf"), "\udc00"]}, {"b": [R]}, 3),
    ],
    ids=["text", "lone", "nan", "int", "nested"],
)
def test_repair_json_on_values_parsed_elsewhere(
    value: object, expected: object, repairs: int
) -> None:
    """Values another parser made (an SDK's error body) are repaired the same way."""
    assert repair_json(value) == (expected, repairs)


@pytest.mark.parametrize(
    ("raw", "code", "message"),
    [
        ({"code": "c\ud800", "message": "m\ud800"}, f"c{R}", f"m{R}"),
        ({"type": "t\udfff", "message": None}, f"t{R}", "the upstream reported an error"),
        ("boom \ud800", "upstream_error", f"boom {R}"),
        ({"code": float("nan"), "message": ["\ud800"]}, "nan", "['\\ud800']"),
    ],
    ids=["code-and-message", "type", "not-an-object", "odd-types"],
)
def test_error_info_is_valid_text(raw: object, code: str, message: str) -> None:
    """error_info makes valid text of whatever the upstream's error holds."""
    info = error_info(raw, ("secret-key",))
    assert info == ErrorInfo(code=code, message=message)
    info.message.encode()
    info.code.encode()


def test_the_accumulator_counts_its_repairs() -> None:
    """parse() repairs and counts; feeding the repaired chunk grows repaired text."""
    acc = ChunkAccumulator()
    clean = acc.parse('{"choices": [{"index": 0, "delta": {"content": "a"}}]}')
    assert acc.repairs == 0
    bad = acc.parse(
        '{"choices": [{"index": 0, "delta": {"content": "b\\ud800", "tool_calls": [{"index": 0,'
        ' "id": "c\\ud800", "function": {"name": "n\\ud800", "arguments": "\\ud800"}}]},'
        ' "finish_reason": "s\\ud800"}], "usage": {"p\\ud800": 1, "q": 1e999}}'
    )
    assert acc.repairs == 7  # five strings, a key, a number
    assert isinstance(clean, dict)
    assert isinstance(bad, dict)
    assert acc.feed(clean) == (ChoiceDelta(0, content="a"),)
    assert acc.feed(bad) == (
        ChoiceDelta(0, content=f"b{R}", tool_calls=(ToolCallDelta(0, f"c{R}", f"n{R}", R),)),
    )
    assert acc.content(0) == f"ab{R}"
    assert acc.finish_reasons() == ((0, f"s{R}"),)
    assert acc.usage == {f"p{R}": 1}


def room_with_turn() -> RoomState:
    """A room whose turn t1 streams."""
    state = RoomState(RoomName("r"), "e1")
    state.start_turn(PromptRequest("hi"), turn_id=TurnId("t1"), model="m", now=1.0)
    return state


def sse(obj: str) -> SSEEvent:
    """One upstream event with ``obj`` as its data."""
    return SSEEvent(obj)


@pytest.mark.parametrize(
    ("data", "status", "repairs"),
    [
        (
            '{"choices": [{"index": 0, "delta": {"content": "x\\ud800"}, '
            '"finish_reason": "stop"}], "usage": {"prompt_tokens": NaN, "total_tokens": 2}}',
            "completed",
            2,
        ),
        ('{"error": {"message": "m\\ud800", "code": "c"}}', "failed", 1),
        ('"\\ud800"', "failed", 1),
        (
            '{"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}',
            "completed",
            0,
        ),
    ],
    ids=["chunk", "error-object", "bare-string", "clean"],
)
def test_the_room_repairs_chunks_and_the_turn_encodes(data: str, status: str, repairs: int) -> None:
    """A room takes repaired chunks: every event encodes; the turn's repairs are readable."""
    state = room_with_turn()
    events = state.feed_many(TurnId("t1"), [sse(data), sse("[DONE]")], 2.0)
    assert isinstance(events[-1], TurnEnd)
    assert events[-1].status == status
    for event in events:
        strict_json(to_wire(event))
    assert state.turns.repairs(TurnId("t1")) == repairs
    assert state.turns.repairs(TurnId("unknown")) == 0
