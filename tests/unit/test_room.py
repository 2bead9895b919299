"""RoomState: turns, upstream feeding, turn ends, cancel, viewers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.codec import encode
from server.core.errors import ClientError
from server.core.messages import (
    ChoiceDelta,
    ChoiceEnd,
    Delta,
    ErrorInfo,
    PromptRequest,
    TurnEnd,
    TurnStart,
)
from server.core.sse import SSEEvent
from server.core.types import TurnId
from tests.unit.room_helpers import DONE, SECRET, feed, make_room, sse, start, text


def test_start_turn_makes_turn_start_seq_1() -> None:
    """The first prompt starts a turn with TurnStart seq 1."""
    room = make_room()
    assert room.streaming_turn is None
    started = room.start_turn(PromptRequest("Tell me"), turn_id=TurnId("t1"), model="m", now=1.5)
    assert started.turn == "t1"
    assert started.seq == 1
    assert started.event == TurnStart(seq=1, turn="t1", prompt="Tell me", model="m", started_at=1.5)
    assert room.seq == 1
    assert room.streaming_turn == "t1"
    assert room.turn_count == 1


def test_second_prompt_while_streaming_is_turn_in_progress() -> None:
    """A prompt while a turn streams is a temporary turn_in_progress echoing its id."""
    room = make_room()
    start(room, "t1")
    with pytest.raises(ClientError) as info:
        start(room, "t2", pid="p-2")
    assert (info.value.code, info.value.temporary, info.value.ref) == (
        "turn_in_progress",
        True,
        "p-2",
    )
    assert room.seq == 1
    assert room.turn_count == 1


def test_known_prompt_id_returns_its_turn_without_event() -> None:
    """The same prompt id returns the same turn and seq, with no event, before and after end."""
    room = make_room()
    first = room.start_turn(PromptRequest("a", id="p1"), turn_id=TurnId("t1"), model="m", now=1)
    again = room.start_turn(PromptRequest("b", id="p1"), turn_id=TurnId("tX"), model="m", now=2)
    assert (again.turn, again.seq, again.event) == ("t1", 1, None)
    assert first.event is not None
    feed(room, "t1", text("x", finish="stop"), DONE)
    start(room, "t2", pid="p2")  # another turn streams now: the known id still answers
    later = room.start_turn(PromptRequest("c", id="p1"), turn_id=TurnId("tY"), model="m", now=3)
    assert (later.turn, later.seq, later.event) == ("t1", 1, None)
    assert room.turn_count == 2


FEEDS: dict[str, tuple[list[SSEEvent], str, ErrorInfo | None]] = {
    "done-all-finished": ([text("a"), text("", finish="stop"), DONE], "completed", None),
    "done-spaces": ([text("a", finish="stop"), SSEEvent(" [DONE]\n")], "completed", None),
    "done-unfinished": ([text("a"), DONE], "truncated", None),
    "done-one-of-two": ([text("a", 0, "stop"), text("b", 1), DONE], "truncated", None),
    "done-nothing": ([DONE], "truncated", None),
    "not-json": (
        [text("a"), SSEEvent("{oops")],
        "failed",
        ErrorInfo("bad_chunk", "the upstream sent a chunk that is not JSON"),
    ),
    "event-error": (
        [sse({"error": {"code": "overloaded", "message": "busy " + SECRET}}, "error")],
        "failed",
        ErrorInfo("overloaded", "busy [redacted]"),
    ),
    "event-error-flat": (
        [sse({"message": "flat", "type": "server_error"}, "error")],
        "failed",
        ErrorInfo("server_error", "flat"),
    ),
    "event-error-string": ([sse("boom", "error")], "failed", ErrorInfo("upstream_error", "boom")),
    "non-dict-json": ([sse([1, 2])], "failed", ErrorInfo("upstream_error", "[1, 2]")),
    "error-object": (
        [text("a"), sse({"error": {"code": 502, "message": "key sk-abcdefghijklmnop"}})],
        "failed",
        ErrorInfo("502", "key [redacted]"),
    ),
}


@pytest.mark.parametrize(("events", "status", "error"), FEEDS.values(), ids=FEEDS.keys())
def test_feed_ends_the_turn(events: list[SSEEvent], status: str, error: ErrorInfo | None) -> None:
    """[DONE], bad chunks and error objects end the turn with the right status and error."""
    room = make_room()
    start(room, "t1")
    out = feed(room, "t1", *events)
    end = out[-1]
    assert isinstance(end, TurnEnd)
    assert (end.status, end.error, end.seq, end.turn) == (status, error, room.seq, "t1")
    assert all(isinstance(e, Delta) for e in out[:-1])
    assert room.streaming_turn is None
    (view,) = room.snapshot().turns
    assert (view.status, view.error, view.ended_at) == (status, error, 20.0)


def test_feed_makes_deltas_only_when_text_grew() -> None:
    """Content chunks make deltas with the next seqs; role/usage chunks consume no seq."""
    room = make_room()
    start(room, "t1")
    assert feed(room, "t1", sse({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})) == []
    assert feed(room, "t1", sse({"choices": [], "usage": {"total_tokens": 2}})) == []
    assert feed(room, "t1", text("Hi"), text(" there")) == [
        Delta(seq=2, turn="t1", choices=(ChoiceDelta(0, content="Hi"),)),
        Delta(seq=3, turn="t1", choices=(ChoiceDelta(0, content=" there"),)),
    ]
    assert room.seq == 3


def test_turn_end_carries_usage_and_finish_reasons() -> None:
    """turn.end carries every choice's finish reason in index order and the usage."""
    room = make_room()
    start(room, "t1")
    groq = {"choices": [], "x_groq": {"usage": {"total_tokens": 9}}}
    out = feed(room, "t1", text("b", 1, "length"), text("a", 0, "stop"), sse(groq), DONE)
    assert out[-1] == TurnEnd(
        seq=4,
        turn="t1",
        status="completed",
        choices=(ChoiceEnd(0, "stop"), ChoiceEnd(1, "length")),
        usage={"total_tokens": 9},
        error=None,
    )


def test_feed_for_another_or_ended_turn_changes_nothing() -> None:
    """Feeding a turn that is not streaming returns [] and takes no seq."""
    room = make_room()
    assert feed(room, "t1", text("a")) == []
    start(room, "t1")
    assert feed(room, "nope", text("a"), DONE) == []
    feed(room, "t1", DONE)
    assert feed(room, "t1", text("late"), DONE) == []
    assert room.seq == 2


def test_end_stream_and_fail() -> None:
    """end_stream() ends completed/truncated, fail() ends failed; both ignore other turns."""
    room = make_room()
    assert room.end_stream(TurnId("t1"), 1.0) is None
    assert room.fail(TurnId("t1"), ErrorInfo("x", "y"), 1.0) is None
    start(room, "t1")
    feed(room, "t1", text("a", finish="stop"))
    assert room.end_stream(TurnId("other"), 1.0) is None
    end = room.end_stream(TurnId("t1"), 2.0)
    assert end is not None
    assert (end.status, end.seq) == ("completed", 3)
    assert room.end_stream(TurnId("t1"), 3.0) is None
    start(room, "t2")
    assert room.end_stream(TurnId("t2"), 4.0) == TurnEnd(5, "t2", "truncated", (), None, None)
    start(room, "t3")
    assert room.fail(TurnId("t2"), ErrorInfo("x", "y"), 5.0) is None
    failed = room.fail(TurnId("t3"), ErrorInfo("upstream_error", "HTTP 500"), 5.0)
    assert failed == TurnEnd(7, "t3", "failed", (), None, ErrorInfo("upstream_error", "HTTP 500"))
    assert room.fail(TurnId("t3"), ErrorInfo("x", "y"), 6.0) is None


def test_cancel() -> None:
    """Cancel: unknown is not_found, ended is turn_ended, streaming ends cancelled."""
    room = make_room()
    with pytest.raises(ClientError) as unknown:
        room.cancel("t1", 1.0)
    assert unknown.value.code == "not_found"
    start(room, "t1")
    feed(room, "t1", text("a"), text("b", 1, "stop"))
    end = room.cancel("t1", 5.0)
    assert end == TurnEnd(
        4, "t1", "cancelled", (ChoiceEnd(0, None), ChoiceEnd(1, "stop")), None, None
    )
    assert feed(room, "t1", text("late"), DONE) == []
    assert room.end_stream(TurnId("t1"), 6.0) is None
    assert room.seq == 4
    with pytest.raises(ClientError) as ended:
        room.cancel("t1", 7.0)
    assert ended.value.code == "turn_ended"
    assert room.snapshot().turns[0].choices[0].content == "a"


def test_join_leave_and_idle() -> None:
    """Viewer counting never goes negative; idle means no viewer and nothing streaming."""
    room = make_room()
    assert room.is_idle()
    assert (room.join(), room.join()) == (1, 2)
    assert not room.is_idle()
    assert (room.leave(), room.leave(), room.leave()) == (1, 0, 0)
    assert room.is_idle()
    start(room, "t1")
    assert not room.is_idle()
    feed(room, "t1", DONE)
    assert room.is_idle()


def test_deeply_nested_chunk_fails_the_turn() -> None:
    """A chunk too deeply nested to parse fails the turn like any non-JSON chunk."""
    room = make_room()
    start(room, "t1")
    out = feed(room, "t1", SSEEvent("[" * 100_000))
    assert [(e.status, e.error) for e in out if isinstance(e, TurnEnd)] == [
        ("failed", ErrorInfo("bad_chunk", "the upstream sent a chunk that is not JSON"))
    ]


def _strict_loads(data: bytes) -> Any:
    """Parse JSON, refusing NaN, Infinity and -Infinity (which json.loads accepts by default)."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"not JSON: {token}")

    return json.loads(data, parse_constant=refuse)


def test_non_finite_usage_still_encodes() -> None:
    """Non-finite usage numbers are dropped: turn.end and the snapshot are strict JSON."""
    room = make_room()
    start(room, "t1")
    usage = (
        '{"prompt_tokens":NaN,"completion_tokens":Infinity,"cached":-Infinity,"big":1e999,'
        '"total_tokens":3}'
    )
    events = feed(room, "t1", SSEEvent(f'{{"choices":[],"usage":{usage}}}'), DONE)
    end = _strict_loads(encode(events[-1]))
    assert end["type"] == "turn.end"
    assert end["usage"] == {"total_tokens": 3}
    snapshot = _strict_loads(encode(room.snapshot()))
    assert [t["usage"] for t in snapshot["turns"]] == [{"total_tokens": 3}]
    assert room.turns.repairs(TurnId("t1")) == 4


@pytest.mark.parametrize(
    ("body_started", "status", "error"),
    [
        (False, "failed", ErrorInfo("upstream_timeout", "the upstream did not answer in time")),
        (True, "truncated", None),
    ],
)
def test_time_out_fails_before_the_body_and_truncates_after(
    body_started: bool, status: str, error: ErrorInfo | None
) -> None:
    """Silence before the body is a failure; silence after it keeps the text, truncated."""
    room = make_room()
    start(room, "t1")
    feed(room, "t1", text("partial"))
    end = room.time_out(TurnId("t1"), body_started=body_started, now=3.0)
    assert end is not None
    assert (end.status, end.error) == (status, error)
    assert room.streaming_turn is None
    assert room.time_out(TurnId("t1"), body_started=True, now=4.0) is None


def test_turn_view_of_a_retained_turn_and_of_an_unknown_one() -> None:
    """turns.view shows a retained turn as it stands and None for a turn the room never had."""
    room = make_room()
    start(room, "t1")
    feed(room, "t1", text("so far"))
    view = room.turns.view(TurnId("t1"))
    assert view is not None
    assert (view.status, view.choices[0].content) == ("streaming", "so far")
    assert room.turns.view(TurnId("nope")) is None


def test_events_that_arrive_together_go_out_as_one_delta() -> None:
    """feed_many merges a batch's growth into one delta (one seq) with the exact text."""
    room = make_room()
    start(room, "t1")
    batch = [text("Hel"), text("lo", index=1), text(", wor"), text("ld", finish="stop")]
    out = room.feed_many(TurnId("t1"), batch, 2.0)
    assert len(out) == 1
    delta = out[0]
    assert isinstance(delta, Delta)
    assert delta.seq == 2
    assert delta.first_seq is None
    assert [(c.index, c.content) for c in delta.choices] == [(0, "Hel, world"), (1, "lo")]
    assert room.feed_many(TurnId("t1"), [text("", finish="stop", index=1)], 2.5) == []


def test_an_end_inside_a_batch_follows_its_delta_and_stops_it() -> None:
    """A batch with [DONE] (or an error) in the middle: delta, then turn.end; the rest ignored."""
    room = make_room()
    start(room, "t1")
    out = room.feed_many(TurnId("t1"), [text("a"), text("b", finish="stop"), DONE, text("c")], 2.0)
    assert [type(e).__name__ for e in out] == ["Delta", "TurnEnd"]
    assert [e.seq for e in out] == [2, 3]
    end = out[1]
    assert isinstance(end, TurnEnd)
    assert end.status == "completed"
    view = room.turns.view(TurnId("t1"))
    assert view is not None
    assert view.choices[0].content == "ab"
    room2 = make_room()
    start(room2, "t1")
    failed = room2.feed_many(TurnId("t1"), [sse({"error": {"message": "x"}}), text("z")], 2.0)
    assert [type(e).__name__ for e in failed] == ["TurnEnd"]
    assert room2.feed_many(TurnId("t1"), [text("late")], 3.0) == []


@pytest.mark.parametrize(
    "ending",
    [DONE, sse({"error": {"message": "x"}}), sse({"choices": []}, event="error"), SSEEvent("{")],
)
def test_the_relay_gets_what_the_turn_took_up_to_its_end(ending: SSEEvent) -> None:
    """The tap's relay is given each event before the end: never the end nor anything after."""
    room = make_room()
    start(room, "t1")
    relayed: list[SSEEvent] = []
    a, b = text("a"), text("b")
    room.feed_many(TurnId("t1"), [a, b, ending, text("after")], 2.0, relayed.append)
    assert relayed == [a, b]
    room.feed_many(TurnId("t1"), [text("late")], 3.0, relayed.append)
    assert relayed == [a, b]
