"""RoomState with a turn whose upstream speaks the Responses API: its events end the turn."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from server.core.messages import (
    ChoiceDelta,
    ChoiceEnd,
    ChoiceView,
    Delta,
    ErrorInfo,
    PromptRequest,
    ResponsePosition,
    SequencedEvent,
    ToolCallDelta,
    ToolCallView,
    TurnEnd,
    TurnStatus,
)
from server.core.room import RoomState, StoredRoom
from server.core.sse import SSEEvent
from server.core.types import TurnId
from tests.unit.room_helpers import SECRET, make_room

T = TurnId("t1")
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
FC_ITEM = {
    "id": "fc_1",
    "type": "function_call",
    "call_id": "call_abc",
    "name": "get_weather",
    "arguments": "",
    "status": "in_progress",
}
MSG_ITEM = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}


def oa(kind: str, seq: int, **fields: Any) -> SSEEvent:
    """An SSE event as OpenAI sends it: ``event:`` is the type, ``data:`` the JSON."""
    return SSEEvent(json.dumps({"type": kind, "sequence_number": seq, **fields}), kind)


def response(status: str, **fields: Any) -> dict[str, Any]:
    """A response object as the lifecycle events carry it."""
    return {"id": "resp_123", "object": "response", "status": status, "output": [], **fields}


def opening() -> list[SSEEvent]:
    """``response.created``, the message item, its part, and the text ``Hello``."""
    part = {"type": "output_text", "text": "", "annotations": []}
    delta = {"item_id": "msg_1", "output_index": 0, "content_index": 0, "logprobs": []}
    return [
        oa("response.created", 0, response=response("in_progress", usage=None)),
        oa("response.in_progress", 1, response=response("in_progress", usage=None)),
        oa("response.output_item.added", 2, output_index=0, item=MSG_ITEM),
        oa("response.content_part.added", 3, item_id="msg_1", output_index=0, part=part),
        oa("response.output_text.delta", 4, delta="Hel", **delta),
        oa("response.output_text.delta", 5, delta="lo", **delta),
        oa("response.output_text.done", 6, text="Hello", **delta),
        oa("response.output_item.done", 7, output_index=0, item=MSG_ITEM),
    ]


def tool_call() -> list[SSEEvent]:
    """A function call announced, then its arguments in two deltas."""
    where = {"item_id": "fc_1", "output_index": 1}
    return [
        oa("response.output_item.added", 8, output_index=1, item=FC_ITEM),
        oa("response.function_call_arguments.delta", 9, delta='{"ci', **where),
        oa("response.function_call_arguments.delta", 10, delta='ty":"Oslo"}', **where),
        oa("response.function_call_arguments.done", 11, arguments='{"city":"Oslo"}', **where),
    ]


def started(room: RoomState | None = None) -> RoomState:
    """A room with turn ``t1`` streaming from a Responses upstream."""
    room = room or make_room()
    request = PromptRequest("weather?")
    room.start_turn(request, turn_id=T, model="m", now=10.0, api="responses")
    return room


def run(room: RoomState, *events: SSEEvent) -> list[SequencedEvent]:
    """Feed events one by one; everything they made."""
    out: list[SequencedEvent] = []
    for event in events:
        out.extend(room.feed(T, event, 20.0))
    return out


def test_a_responses_turn_streams_and_completes_with_tool_calls_and_usage() -> None:
    """Text and a function call grow as deltas; response.completed ends it, usage renamed."""
    room = started()
    completed = response("completed", output=[MSG_ITEM, FC_ITEM], usage=USAGE)
    out = run(room, *opening(), *tool_call(), oa("response.completed", 12, response=completed))
    assert [e.seq for e in out] == list(range(2, 2 + len(out)))
    deltas = [e.choices for e in out if isinstance(e, Delta)]
    assert deltas == [
        (ChoiceDelta(0, content="Hel"),),
        (ChoiceDelta(0, content="lo"),),
        (ChoiceDelta(0, tool_calls=(ToolCallDelta(0, "call_abc", "get_weather"),)),),
        (ChoiceDelta(0, tool_calls=(ToolCallDelta(0, arguments='{"ci'),)),),
        (ChoiceDelta(0, tool_calls=(ToolCallDelta(0, arguments='ty":"Oslo"}'),)),),
    ]
    end = out[-1]
    assert end == TurnEnd(
        seq=7,
        turn=T,
        status="completed",
        choices=(ChoiceEnd(0, "tool_calls"),),
        usage=CHAT_USAGE,
        error=None,
    )
    assert room.streaming_turn is None
    (turn,) = room.snapshot().turns
    assert turn == room.turns.view(T)
    assert (turn.status, turn.ended_at, turn.usage, turn.error) == (
        "completed",
        20.0,
        CHAT_USAGE,
        None,
    )
    calls = (ToolCallView(0, "call_abc", "get_weather", '{"city":"Oslo"}'),)
    assert turn.choices == (ChoiceView(0, "Hello", "", "", calls, "tool_calls"),)
    assert at(room.turns.position(T)) == ("resp_123", 12)
    assert run(room, oa("response.output_text.delta", 13, delta="late")) == []


@pytest.mark.parametrize(
    ("terminal", "status", "finish", "error"),
    [
        (
            oa("response.completed", 8, response=response("completed", usage=USAGE)),
            "completed",
            "stop",
            None,
        ),
        (
            oa(
                "response.incomplete",
                8,
                response=response(
                    "incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=USAGE
                ),
            ),
            "completed",
            "length",
            None,
        ),
        (
            oa(
                "response.incomplete",
                8,
                response=response("incomplete", incomplete_details={"reason": "content_filter"}),
            ),
            "completed",
            "content_filter",
            None,
        ),
        (
            oa(
                "response.failed",
                8,
                response=response(
                    "failed", error={"code": "server_error", "message": f"oops {SECRET}"}
                ),
            ),
            "failed",
            None,
            ErrorInfo("server_error", "oops [redacted]"),
        ),
        (
            oa("error", 8, code="ERR_SOMETHING", message="went wrong", param=None),
            "failed",
            None,
            ErrorInfo("ERR_SOMETHING", "went wrong"),
        ),
        (
            SSEEvent('{"code": "rate_limit_exceeded", "message": "slow down"}', "error"),
            "failed",
            None,
            ErrorInfo("rate_limit_exceeded", "slow down"),
        ),
        (SSEEvent("[DONE]"), "truncated", None, None),
        (
            SSEEvent("{not json", "response.output_text.delta"),
            "failed",
            None,
            ErrorInfo("bad_chunk", "the upstream sent a chunk that is not JSON"),
        ),
    ],
    ids=[
        "completed",
        "incomplete",
        "content-filter",
        "failed",
        "error",
        "error-untyped",
        "done",
        "not-json",
    ],
)
def test_the_event_that_ends_the_turn(
    terminal: SSEEvent, status: TurnStatus, finish: str | None, error: ErrorInfo | None
) -> None:
    """Each terminal event ends the turn with its status, finish reason and error at once."""
    room = started()
    run(room, *opening())
    (end,) = run(room, terminal)
    assert isinstance(end, TurnEnd)
    assert (end.status, end.choices, end.error) == (status, (ChoiceEnd(0, finish),), error)
    assert room.turns.view(T) is not None
    assert room.streaming_turn is None


def test_a_body_that_ends_without_a_terminal_event_is_truncated() -> None:
    """No response.completed before the body ended: ``truncated``, no finish reason, no usage."""
    room = started()
    run(room, *opening(), oa("response.future_event", 8, stuff=[1]), SSEEvent("[1, 2]"))
    end = room.end_stream(T, 30.0)
    assert end is not None
    assert (end.status, end.choices, end.usage, end.error) == (
        "truncated",
        (ChoiceEnd(0, None),),
        None,
        None,
    )
    view = room.turns.view(T)
    assert view is not None
    assert view.choices[0].content == "Hello"


def test_a_batch_stops_at_the_terminal_event_and_relays_it_last() -> None:
    """One batch: one delta, then the end; the relay gets the terminal event, nothing after it."""
    room = started()
    relayed: list[SSEEvent] = []
    completed = oa("response.completed", 8, response=response("completed"))
    batch = [*opening(), completed, oa("response.output_text.delta", 9, delta="late")]
    out = room.feed_many(T, batch, 20.0, relay=relayed.append)
    assert [type(e) for e in out] == [Delta, TurnEnd]
    assert isinstance(out[0], Delta)
    assert out[0].choices == (ChoiceDelta(0, content="Hello"),)
    assert relayed == [*opening(), completed]


@pytest.mark.parametrize(
    ("ending", "relayed_too"),
    [
        (oa("response.completed", 8, response=response("completed")), True),
        (oa("response.incomplete", 8, response=response("incomplete")), True),
        (oa("response.failed", 8, response=response("failed", error={"message": "x"})), True),
        (oa("error", 8, code="server_error", message="boom"), True),
        (SSEEvent('"boom"', "error"), True),
        (SSEEvent("[DONE]"), False),
        (SSEEvent("{not json", "response.completed"), False),
    ],
)
def test_the_relay_gets_the_ending_event_only_when_the_responses_stream_sent_it(
    ending: SSEEvent, relayed_too: bool
) -> None:
    """Terminal and error events reach the relay; a [DONE] or a bad chunk that ends it do not."""
    room = started()
    relayed: list[SSEEvent] = []
    room.feed_many(T, [*opening(), ending], 20.0, relay=relayed.append)
    assert room.streaming_turn is None
    assert relayed == [*opening(), *([ending] if relayed_too else [])]
    room.feed_many(T, [oa("response.output_text.delta", 9, delta="late")], 21.0, relayed.append)
    assert len(relayed) == len(opening()) + relayed_too


def at(position: ResponsePosition | None) -> tuple[str, int] | None:
    """A position's response id and sequence number."""
    return None if position is None else (position.response_id, position.after)


def test_a_replay_after_reattaching_adds_nothing() -> None:
    """Events fed again with the sequence numbers already taken make no delta."""
    room = started()
    first = run(room, *opening())
    assert run(room, *opening()[3:]) == []
    more = run(room, oa("response.output_text.delta", 8, delta="!", item_id="msg_1"))
    assert [e.seq for e in first + more] == [2, 3, 4]
    assert at(room.turns.position(T)) == ("resp_123", 8)
    assert room.turns.view(T) is not None
    assert room.snapshot().turns[0].choices[0].content == "Hello!"


def test_the_resume_point_needs_a_responses_turn_with_an_id_and_a_number() -> None:
    """Chat turns, unknown turns, and Responses turns before both are known have none."""
    room = make_room()
    room.start_turn(PromptRequest("q"), turn_id=TurnId("c"), model="m", now=1.0)
    assert room.turns.position(TurnId("c")) is None
    assert room.turns.position(TurnId("nope")) is None
    room.cancel("c", 2.0)
    started(room)
    assert room.turns.position(T) is None
    run(room, SSEEvent(json.dumps({"type": "response.created", "response": {"id": "r"}})))
    assert room.turns.position(T) is None
    run(room, oa("response.in_progress", 3))
    assert at(room.turns.position(T)) == ("r", 3)


def test_a_replica_turn_can_speak_responses() -> None:
    """apply() and restore() make a live turn that reads the API they are told."""
    start = started().seed_view(1.0).events[0][0]
    replica = make_room()
    replica.apply(start, 1.0, "room", "responses")
    restored = RoomState.restore(
        replica.name, replica.epoch, StoredRoom(1, 1, (), ((start, "room"),), 1.0), api="responses"
    )
    for room in (replica, restored):
        (delta,) = run(room, oa("response.output_text.delta", 4, delta="x"))
        assert isinstance(delta, Delta)
        assert room.turns.position(T) is None
        run(room, oa("response.in_progress", 5, response={"id": "resp_9"}))
        assert at(room.turns.position(T)) == ("resp_9", 5)


def test_a_replica_goes_on_from_the_producers_position() -> None:
    """A replica that only applied deltas takes over the stream where the producer stopped.

    The events the producer read are not taken twice; arguments that follow extend the call
    the replica already shows; a new call gets the next index.
    """
    producer = started()
    events = [*opening(), *tool_call()[:2]]
    made = run(producer, *events)
    position = producer.turns.position(T)
    assert position is not None
    assert (position.after, position.items, position.outputs) == (9, {"fc_1": 0}, {1: 0})
    replica = RoomState.restore(producer.name, producer.epoch, producer.seed_view(1.0))
    assert made
    assert replica.turns.position(T) is None  # a chat replica until told
    assert not replica.resume_upstream(msgspec.structs.replace(position, turn="other"))
    assert replica.resume_upstream(position)
    later = [
        *events,  # a re-attach that starts too early repeats them: nothing twice
        *tool_call()[2:],
        oa("response.output_item.added", 12, output_index=2, item={**FC_ITEM, "id": "fc_2"}),
        oa("response.function_call_arguments.delta", 13, delta="{}", item_id="fc_2"),
        oa("response.completed", 14, response=response("completed", usage=USAGE)),
    ]
    run(replica, *later)
    run(producer, *later[len(events) :])
    assert replica.snapshot().turns == producer.snapshot().turns
    calls = replica.snapshot().turns[0].choices[0].tool_calls
    assert [(c.index, c.arguments) for c in calls] == [(0, '{"city":"Oslo"}'), (1, "{}")]
    assert not replica.resume_upstream(position)  # ended: nothing streams any more


def test_skipped_upstream_events_are_counted_per_turn() -> None:
    """Unknown event types count for the Responses turn; chat and unknown turns have none."""
    room = started()
    run(room, *opening(), oa("response.something_new", 8), oa("response.output_text.delta", 9))
    assert room.turns.skipped(T) == 2  # a new type, and a delta without its text
    assert room.turns.skipped(TurnId("nope")) == 0
    chat = make_room()
    chat.start_turn(PromptRequest("q"), turn_id=TurnId("c"), model="m", now=1.0)
    assert chat.turns.skipped(TurnId("c")) == 0
