"""RoomState byte budgets: what a room keeps, and the history it sends upstream."""

from __future__ import annotations

import pytest

from server.core.errors import ClientError
from server.core.messages import (
    ChoiceDelta,
    ChoiceView,
    Delta,
    PromptRequest,
    ToolCallDelta,
    ToolCallView,
    TurnEnd,
    TurnKind,
    TurnStart,
    TurnView,
)
from server.core.room import StoredRoom
from server.core.room_limits import EVENT_OVERHEAD, RoomLimits, event_size, text_size, turn_size
from server.core.types import TurnId
from tests.unit.room_helpers import DONE, feed, make_room, run_turn, start, text

KB = 1024


@pytest.mark.parametrize(
    ("value", "size"),
    [("", 0), ("abc", 3), ("é", 2), ("😀", 4), ("\ud800", 1)],
    ids=["empty", "ascii", "two-byte", "four-byte", "lone-surrogate"],
)
def test_text_size_counts_utf8_bytes(value: str, size: int) -> None:
    """text_size is the UTF-8 length; a lone surrogate (never stored) does not raise."""
    assert text_size(value) == size


def test_event_size_counts_every_string_of_an_event() -> None:
    """A delta costs its strings plus the overhead; a turn.start its prompt and model."""
    call = ToolCallDelta(0, id="c1", name="fn", arguments="{}")
    delta = Delta(
        seq=2,
        turn="t",
        choices=(ChoiceDelta(0, content="ab", reasoning="r", refusal="x", tool_calls=(call,)),),
    )
    assert event_size(delta) == EVENT_OVERHEAD + 2 + 1 + 1 + 2 + 2 + 2
    assert event_size(Delta(seq=3, turn="t", choices=(ChoiceDelta(1, content="é"),))) == (
        EVENT_OVERHEAD + 2
    )
    start_event = TurnStart(seq=1, turn="t", prompt="hey", model="m", started_at=0.0)
    assert event_size(start_event) == EVENT_OVERHEAD + 4
    end = TurnEnd(seq=4, turn="t", status="completed", choices=(), usage=None, error=None)
    assert event_size(end) == EVENT_OVERHEAD


def test_turn_size_counts_the_prompt_and_every_answer_string() -> None:
    """A kept turn costs its prompt and every string of its choices."""
    call = ToolCallView(0, None, None, "{}")
    view = TurnView(
        id="t",
        status="completed",
        prompt="hi",
        model="m",
        started_at=0.0,
        ended_at=1.0,
        choices=(ChoiceView(0, "abc", "r", "", (call,), "stop"),),
        usage=None,
        error=None,
    )
    assert turn_size(view) == EVENT_OVERHEAD + 2 + 3 + 1 + 0 + 2


def test_the_resume_log_gives_way_to_the_byte_budget() -> None:
    """Past max_bytes the oldest events go: a resume from before them gets None (snapshot)."""
    room = make_room(RoomLimits(max_bytes=4 * KB))
    start(room, "t1")
    for _ in range(20):
        feed(room, "t1", text("x" * 500))
    assert room.resume("e1", 0) is None
    tail = room.resume("e1", room.seq - 2)
    assert tail is not None
    assert [e.seq for e in tail] == [room.seq - 1, room.seq]
    # The streaming turn itself is whole, whatever the log kept.
    snap = room.snapshot()
    assert snap.turns[-1].choices[0].content == "x" * 500 * 20


def test_the_oldest_ended_turns_go_first_and_the_newest_stays() -> None:
    """Ended turns over the budget are forgotten oldest first; the newest is always kept."""
    room = make_room(RoomLimits(max_bytes=3 * KB))
    run_turn(room, "t1", "a" * KB)
    run_turn(room, "t2", "b" * KB)
    run_turn(room, "t3", "c" * 2 * KB)
    assert [t.id for t in room.snapshot().turns] == ["t3"]
    run_turn(room, "t4", "d" * 8 * KB)  # alone over the budget: still kept
    assert [t.id for t in room.snapshot().turns] == ["t4"]
    assert room.snapshot().turns[0].choices[0].content == "d" * 8 * KB


def test_a_streaming_turn_is_never_forgotten() -> None:
    """Over the budget the streaming turn stays in the snapshot."""
    room = make_room(RoomLimits(max_bytes=2 * KB, snapshot_turns=5))
    run_turn(room, "t1", "a" * KB)
    run_turn(room, "t2", "b" * 3 * KB)
    start(room, "t3")
    feed(room, "t3", text("c" * 3 * KB))
    run_turn_ids = [t.id for t in room.snapshot().turns]
    assert run_turn_ids == ["t2", "t3"]


def test_no_byte_budget_keeps_by_count_only() -> None:
    """With max_bytes 0 only the counts bound the room."""
    room = make_room(RoomLimits(max_bytes=0, snapshot_turns=2, history_turns=1))
    for i in range(4):
        run_turn(room, f"t{i}", "z" * 50 * KB)
    assert [t.id for t in room.snapshot().turns] == ["t2", "t3"]
    assert room.resume("e1", room.seq - 8) is not None


def test_restore_applies_the_byte_budget_to_stored_turns() -> None:
    """A replica restored from a broker keeps within the same budget."""
    source = make_room()
    for i, size in enumerate((KB, KB, 2 * KB)):
        run_turn(source, f"t{i}", "q" * size)
    views: tuple[tuple[TurnView, TurnKind], ...] = tuple(
        (t, "room") for t in source.snapshot().turns
    )
    stored = StoredRoom(seq=source.seq, turn_count=3, ended=views, events=(), now=0.0)
    restored = type(source).restore(source.name, "e1", stored, RoomLimits(max_bytes=3 * KB))
    assert [t.id for t in restored.snapshot().turns] == ["t2"]


def test_history_leaves_out_the_oldest_turns_past_the_budget() -> None:
    """history_bytes bounds the history: the newest turns that fit go, whole, in order."""
    room = make_room(RoomLimits(history_bytes=2 * KB, history_turns=10, snapshot_turns=10))
    run_turn(room, "t1", "a" * KB, content="p1")
    run_turn(room, "t2", "b" * 600, content="p2")
    run_turn(room, "t3", "c" * 600, content="p3")
    start(room, "t4", content="now")
    messages = room.messages_for(TurnId("t4"), "sys")
    assert [m["content"] for m in messages] == ["sys", "p2", "b" * 600, "p3", "c" * 600, "now"]


def test_history_of_a_turn_with_no_answer_has_only_its_prompt() -> None:
    """An earlier turn that produced no text adds its prompt alone, within the budget."""
    room = make_room(RoomLimits(history_bytes=KB))
    start(room, "t1", content="silent")
    feed(room, "t1", DONE)
    start(room, "t2", content="next")
    messages = room.messages_for(TurnId("t2"), "")
    assert messages == [
        {"role": "user", "content": "silent"},
        {"role": "user", "content": "next"},
    ]


def test_a_prompt_over_the_history_budget_is_too_large() -> None:
    """A room prompt longer than history_bytes alone is refused before it starts a turn."""
    room = make_room(RoomLimits(history_bytes=100))
    with pytest.raises(ClientError) as caught:
        room.start_turn(PromptRequest("é" * 51), turn_id=TurnId("t1"), model="m", now=1.0)
    assert caught.value.code == "too_large"
    assert room.seq == 0
    assert room.streaming_turn is None
    # The tap sends its own conversation: the room's history budget does not apply to it.
    started = room.start_turn(
        PromptRequest("é" * 51), turn_id=TurnId("t2"), model="m", now=1.0, kind="tap"
    )
    assert started.event is not None
