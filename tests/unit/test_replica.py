"""Replicas: a room rebuilt from a broker equals the room that read the upstream.

Replicas: a room rebuilt on another instance from the events and stored turns a broker carries
equals the room that read the upstream.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec
import pytest

from server.core.codec import decode_event, encode, stored_turn, to_wire, turn_from_store
from server.core.errors import ClientError, broker_unavailable
from server.core.messages import (
    ChoiceDelta,
    ChoiceEnd,
    Delta,
    ErrorInfo,
    SequencedEvent,
    Snapshot,
    ToolCallDelta,
    TurnEnd,
    TurnKind,
    TurnStart,
)
from server.core.room import RoomState, StoredRoom
from server.core.types import RoomName, TurnId
from tests.unit.room_helpers import DONE, feed, make_room, sse, start, text

TOOL = sse(
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a'}}
                    ]
                },
            }
        ]
    }
)
TOOL_MORE = sse(
    {
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '":1}'}}]},
                "finish_reason": "tool_calls",
            }
        ]
    }
)
THINK = sse({"choices": [{"index": 1, "delta": {"reasoning_content": "hmm", "refusal": "no"}}]})
USAGE = sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
FAILURE = sse({"error": {"message": "overloaded", "code": "server_error"}})


def producer() -> tuple[RoomState, list[tuple[SequencedEvent, TurnKind]]]:
    """A room that read three turns from the upstream (one still streaming) and its events."""
    room = make_room()
    events: list[tuple[SequencedEvent, TurnKind]] = []

    def run(turn: str, kind: TurnKind, *chunks: Any) -> None:
        first = start(room, turn, content=f"prompt {turn}", kind=kind)
        assert first is not None
        events.append((first, kind))
        events.extend((e, kind) for e in feed(room, turn, *chunks))

    run("t1", "room", text("Hé "), text("🚀", finish="stop"), THINK, TOOL, TOOL_MORE, USAGE, DONE)
    run("t2", "tap", text("partial"), FAILURE)
    run("t3", "room", text("still "), text("going"))
    return room, events


def without_end_times(snapshot: Snapshot) -> list[Any]:
    return [msgspec.structs.replace(t, ended_at=None) for t in snapshot.turns]


def test_events_survive_the_wire() -> None:
    """Every sequenced event decodes to what was encoded."""
    _, events = producer()
    odd: list[SequencedEvent] = [
        Delta(seq=9, turn="t", choices=(ChoiceDelta(0, content="a"),), first_seq=7),
        TurnEnd(9, "t", "failed", (ChoiceEnd(0, None),), None, ErrorInfo("x", "y", True, 500)),
        TurnEnd(9, "t", "completed", (), {"total_tokens": 1}, None),
        Delta(
            seq=3,
            turn="t",
            choices=(ChoiceDelta(1, tool_calls=(ToolCallDelta(0, None, None, "{"),)),),
        ),
    ]
    for event in [e for e, _ in events] + odd:
        assert decode_event(encode(event)) == event


def test_a_replica_fed_the_events_has_the_same_snapshot() -> None:
    """Applying the producer's events (seq by seq) rebuilds every turn exactly."""
    room, events = producer()
    replica = RoomState(RoomName("r"), "e1")
    for event, kind in events:
        replica.apply(decode_event(encode(event)), 99.0, kind)
    assert replica.seq == room.seq
    assert replica.streaming_turn == "t3"
    assert replica.turn_count == 3
    assert without_end_times(replica.snapshot()) == without_end_times(room.snapshot())
    assert replica.turns.kind(TurnId("t2")) == "tap"
    assert replica.turns.kind(TurnId("gone")) == "room"
    assert replica.resume("e1", 2) == room.resume("e1", 2)
    assert replica.messages_for(TurnId("t3"), "sys") == room.messages_for(TurnId("t3"), "sys")


def test_apply_refuses_a_gap_and_ignores_turns_it_does_not_stream() -> None:
    """Out-of-order events raise; events of a turn not streaming here only go to the log."""
    replica = RoomState(RoomName("r"), "e1")
    with pytest.raises(ValueError, match="expected seq 1"):
        replica.apply(TurnStart(2, "t1", "p", "m", 1.0), 1.0)
    replica.apply(Delta(seq=1, turn="t0", choices=(ChoiceDelta(0, content="x"),)), 1.0)
    replica.apply(TurnEnd(2, "t0", "completed", (), None, None), 1.0)
    replica.apply(TurnStart(3, "t1", "p", "m", 1.0), 1.0)
    replica.apply(TurnStart(4, "t1", "p", "m", 1.0), 1.0)  # a repeated start changes nothing
    replica.apply(TurnEnd(5, "t1", "cancelled", (ChoiceEnd(0, None),), None, None), 7.0)
    assert replica.turn_count == 1
    assert replica.seq == 5
    (turn,) = replica.snapshot().turns
    assert (turn.id, turn.status, turn.ended_at) == ("t1", "cancelled", 7.0)
    assert turn.choices[0].finish_reason is None
    assert replica.resume("e1", 0) is not None


def test_restore_from_stored_turns_and_the_newest_events() -> None:
    """Ended turns come from the stored views; the events rebuild the streaming turn."""
    room, events = producer()
    ended = [
        turn_from_store(stored_turn(view, room.turns.kind(TurnId(view.id))))
        for view in room.snapshot().turns
        if view.status != "streaming"
    ]
    stored = StoredRoom(seq=room.seq, turn_count=3, ended=ended, events=events, now=5.0)
    replica = RoomState.restore(RoomName("r"), "e1", stored)
    assert without_end_times(replica.snapshot()) == without_end_times(room.snapshot())
    assert [t.ended_at for t in replica.snapshot().turns] == [20.0, 20.0, None]
    assert replica.turns.kind(TurnId("t2")) == "tap"
    # Only the newest events kept: t1's start is gone, t1 still comes from its stored view.
    tail = events[3:]
    replica = RoomState.restore(RoomName("r"), "e1", dataclasses.replace(stored, events=tail))
    assert without_end_times(replica.snapshot()) == without_end_times(room.snapshot())
    assert replica.resume("e1", 0) is None
    assert replica.resume("e1", tail[0][0].seq - 1) is not None
    # Nothing kept at all: the seq and the count still say where the room is.
    bare = RoomState.restore(RoomName("r"), "e9", StoredRoom(41, 7, (), (), 1.0))
    assert (bare.seq, bare.turn_count, bare.snapshot().turns) == (41, 7, ())


def test_restored_turns_feed_the_history() -> None:
    """A replica built from stored turns sends the same history upstream."""
    room = make_room()
    start(room, "t1", content="first")
    feed(room, "t1", text("answer one", finish="stop"), DONE)
    view = room.turns.view(TurnId("t1"))
    assert view is not None
    replica = RoomState.restore(
        RoomName("r"), "e1", StoredRoom(room.seq, 1, [(view, "room")], (), 1.0)
    )
    start(room, "t2", content="second")
    start(replica, "t2", content="second")
    assert replica.messages_for(TurnId("t2"), "") == room.messages_for(TurnId("t2"), "")


def test_check_cancel() -> None:
    """check_cancel answers as cancel does, without ending anything."""
    room = make_room()
    start(room, "t1")
    with pytest.raises(ClientError, match="no such turn"):
        room.check_cancel("nope")
    room.check_cancel("t1")
    assert room.streaming_turn == "t1"
    room.cancel("t1", 1.0)
    with pytest.raises(ClientError) as info:
        room.check_cancel("t1")
    assert info.value.code == "turn_ended"


BAD_EVENTS: list[Any] = [
    {"type": "presence", "seq": 1, "turn": "t"},
    {"type": "delta", "seq": True, "turn": "t", "choices": []},
    {"type": "delta", "seq": 1, "turn": 5, "choices": []},
    {"type": "delta", "seq": 1, "turn": "t", "choices": {}},
    {"type": "delta", "seq": 1, "turn": "t", "choices": [1]},
    {"type": "delta", "seq": 1, "turn": "t", "choices": [{"index": 0, "content": 3}]},
    {"type": "turn.start", "seq": 1, "turn": "t", "prompt": "p", "model": "m", "started_at": "x"},
    {"type": "turn.end", "seq": 1, "turn": "t", "status": "done", "choices": []},
    {"type": "turn.end", "seq": 1, "turn": "t", "status": "failed", "choices": [], "error": 1},
    {"type": "turn.end", "seq": 1, "turn": "t", "status": "failed", "choices": [], "usage": []},
]


@pytest.mark.parametrize("obj", BAD_EVENTS)
def test_malformed_events_are_refused(obj: Any) -> None:
    with pytest.raises(ValueError, match=r"Expected|Invalid|missing required"):
        decode_event(json.dumps(obj).encode())


def test_malformed_stored_turns_are_refused() -> None:
    room, _ = producer()
    good = to_wire(room.snapshot().turns[0])
    assert turn_from_store(json.dumps({"kind": "tap", "turn": good}).encode()) == (
        room.snapshot().turns[0],
        "tap",
    )
    for data in (
        b"[1]",
        json.dumps({"kind": "other", "turn": good}).encode(),
        json.dumps({"kind": "room", "turn": [good]}).encode(),
        json.dumps({"kind": "room", "turn": {**good, "choices": [{"index": 0}]}}).encode(),
    ):
        with pytest.raises(ValueError, match=r"Expected|Invalid|missing required"):
            turn_from_store(data)


def test_tool_call_names_arrive_before_their_arguments() -> None:
    """A delta may set a call's id and name with no arguments yet; later ones append."""
    replica = RoomState(RoomName("r"), "e1")
    replica.apply(TurnStart(1, "t1", "p", "m", 1.0), 1.0)
    for seq, grew in enumerate((ToolCallDelta(0, "c", "f"), ToolCallDelta(0, "x", "y", "{}")), 2):
        delta = Delta(seq=seq, turn="t1", choices=(ChoiceDelta(0, tool_calls=(grew,)),))
        replica.apply(delta, 1.0)
    call = replica.snapshot().turns[0].choices[0].tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("c", "f", "{}")


def test_broker_unavailable_is_temporary_and_closes_with_1013() -> None:
    """A broker outage is the client's to wait out: temporary, 503, close 1013."""
    error = broker_unavailable("p-1")
    assert (error.code, error.temporary, error.close_code, error.ref) == (
        "unavailable",
        True,
        1013,
        "p-1",
    )
