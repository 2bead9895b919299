"""RoomState reading side: resume, snapshot, upstream history, prompt-id memory."""

from __future__ import annotations

import pytest

from server.core import room as room_module
from server.core.errors import ClientError
from server.core.messages import PromptRequest, SequencedEvent
from server.core.room import RoomState
from server.core.room_limits import RoomLimits
from server.core.types import TurnId
from tests.unit.room_helpers import DONE, feed, make_room, run_turn, start, text


def events_of(room: RoomState) -> list[SequencedEvent]:
    """Seqs 1-9: t1 (start, 2 deltas, end), t2 (start, delta, end), t3 (start, delta)."""
    out: list[SequencedEvent] = []
    for turn, pieces in [("t1", ["a", "b"]), ("t2", ["c"]), ("t3", ["d"])]:
        event = start(room, turn)
        assert event is not None
        out.append(event)
        out.extend(feed(room, turn, *(text(p) for p in pieces)))
        if turn != "t3":
            out.extend(feed(room, turn, DONE))
    return out


def test_resume_within_the_log_gives_exactly_the_events_after_since() -> None:
    """resume() returns every event after ``since``, in order, or () when up to date."""
    room = make_room()
    log = events_of(room)
    assert [e.seq for e in log] == list(range(1, 10))
    for since in range(10):
        assert room.resume("e1", since) == tuple(log[since:])
    assert room.resume("e1", 9) == ()


def test_resume_on_a_fresh_room() -> None:
    """A room with no events resumes since=0 with nothing to send."""
    assert make_room().resume("e1", 0) == ()


@pytest.mark.parametrize(
    ("epoch", "since", "expected"),
    [
        ("e1", 9, ()),
        ("e1", 8, (9,)),
        ("e1", 6, (7, 8, 9)),
        ("e1", 5, None),
        ("e1", 0, None),
        ("e2", 8, None),
        ("e1", 10, None),
        ("e1", -1, None),
    ],
    ids=["up-to-date", "one", "whole-log", "too-old", "zero", "wrong-epoch", "future", "negative"],
)
def test_resume_is_all_or_nothing(epoch: str, since: int, expected: tuple[int, ...] | None) -> None:
    """With 3 retained events, resume gives the exact tail or None, never a partial replay."""
    room = make_room(RoomLimits(retained_events=3))
    events_of(room)
    got = room.resume(epoch, since)
    assert (None if got is None else tuple(e.seq for e in got)) == expected


def test_retained_events_zero_still_keeps_one() -> None:
    """retained_events=0 keeps the last event so a client one behind can still resume."""
    room = make_room(RoomLimits(retained_events=0))
    events_of(room)
    resumed = room.resume("e1", 8)
    assert resumed is not None
    assert [e.seq for e in resumed] == [9]
    assert room.resume("e1", 7) is None


def test_snapshot_shows_the_newest_turns_and_partial_text() -> None:
    """snapshot() has the newest snapshot_turns turns at the room's seq, streaming text too."""
    room = make_room(RoomLimits(snapshot_turns=2, history_turns=1))
    events_of(room)
    snap = room.snapshot()
    assert (snap.room, snap.epoch, snap.seq) == ("r", "e1", 9)
    assert [t.id for t in snap.turns] == ["t2", "t3"]
    t2, t3 = snap.turns
    assert (t2.status, t2.choices[0].content, t2.ended_at, t2.prompt) == (
        "truncated",
        "c",
        20.0,
        "hi",
    )
    assert (t3.status, t3.choices[0].content, t3.ended_at, t3.model) == (
        "streaming",
        "d",
        None,
        "m",
    )
    assert (t3.started_at, t3.usage, t3.error) == (10.0, None, None)
    with pytest.raises(ClientError) as ended:
        room.cancel("t1", 30.0)  # out of the snapshot, still known until the next end
    assert ended.value.code == "turn_ended"
    room.end_stream(TurnId("t3"), 30.0)
    assert [t.id for t in room.snapshot().turns] == ["t2", "t3"]
    with pytest.raises(ClientError) as pruned:
        room.cancel("t1", 30.0)
    assert pruned.value.code == "not_found"


def test_snapshot_turns_zero_still_shows_one() -> None:
    """snapshot_turns=0 is treated as 1 so a snapshot always shows the newest turn."""
    room = make_room(RoomLimits(snapshot_turns=0, history_turns=0))
    events_of(room)
    assert [t.id for t in room.snapshot().turns] == ["t3"]
    assert make_room().snapshot().turns == ()


def test_messages_for_sends_system_history_and_prompt() -> None:
    """History: system prompt, earlier room turns' prompts and non-empty choice-0 answers."""
    room = make_room(RoomLimits(history_turns=2))
    run_turn(room, "t1", "old answer", content="q1")
    run_turn(room, "t2", "", content="q2")  # no answer text: only the user message
    run_turn(room, "tap", "tap answer", content="tapped", kind="tap")
    run_turn(room, "t3", "answer 3", content="q3")
    start(room, "t4", content="q4")
    assert room.messages_for(TurnId("t4"), "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q2"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "answer 3"},
        {"role": "user", "content": "q4"},
    ]


def test_messages_for_without_system_prompt_or_history() -> None:
    """No system prompt adds no system message; history_turns=0 sends the prompt alone."""
    room = make_room(RoomLimits(history_turns=0))
    run_turn(room, "t1", "a", content="q1")
    start(room, "t2", content="q2")
    assert room.messages_for(TurnId("t2"), "") == [{"role": "user", "content": "q2"}]


def test_messages_for_uses_choice_zero_only() -> None:
    """Only choice 0's content goes into history, not other choices."""
    room = make_room()
    start(room, "t1", content="q1")
    feed(room, "t1", text("zero", 0, "stop"), text("one", 1, "stop"), DONE)
    start(room, "t2", content="q2")
    assert room.messages_for(TurnId("t2"), "") == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "zero"},
        {"role": "user", "content": "q2"},
    ]


def test_forgotten_prompt_id_starts_a_new_turn() -> None:
    """An id whose turn is neither retained nor in the log is forgotten; reusing it starts anew."""
    room = make_room(RoomLimits(retained_events=3, snapshot_turns=1, history_turns=1))
    for turn, pid in [("t1", "p1"), ("t2", "p2")]:
        start(room, turn, pid=pid)
        feed(room, turn, DONE)
    start(room, "t3", pid="p3")  # seq 5; t1 is pruned and the log holds seqs 3-5 only
    feed(room, "t3", DONE)
    again = room.start_turn(PromptRequest("x", id="p1"), turn_id=TurnId("t4"), model="m", now=1)
    assert (again.turn, again.seq) == ("t4", 7)
    assert again.event is not None
    kept = room.start_turn(PromptRequest("x", id="p3"), turn_id=TurnId("t5"), model="m", now=1)
    assert (kept.turn, kept.seq, kept.event) == ("t3", 5, None)


def test_prompt_ids_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_PROMPT_IDS, the oldest ids are forgotten even while retained."""
    monkeypatch.setattr(room_module, "MAX_PROMPT_IDS", 2)
    room = make_room()
    for i in range(3):
        start(room, f"t{i}", pid=f"p{i}")
        feed(room, f"t{i}", DONE)
    start(room, "t9")  # prompts without an id do not disturb the known ids
    feed(room, "t9", DONE)
    assert start(room, "tA", pid="p1") is None
    assert start(room, "tB", pid="p2") is None
    assert start(room, "tC", pid="p0") is not None
