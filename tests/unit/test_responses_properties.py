"""Properties of Responses streams: any chunking, batching or replay rebuilds the exact answer."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.codec import encode
from server.core.messages import (
    ChoiceDelta,
    Delta,
    PromptRequest,
    SequencedEvent,
    Snapshot,
    TurnEnd,
)
from server.core.responses_stream import ResponsesAccumulator
from server.core.room import RoomState
from server.core.sse import SSEDecoder, SSEEvent
from server.core.types import RoomName, TurnId
from server.tools.rebuild import Rebuild, TurnText

SETTINGS = settings(max_examples=200, deadline=None)
TEXT_EVENTS = {
    "response.output_text.delta": "content",
    "response.refusal.delta": "refusal",
    "response.reasoning_summary_text.delta": "reasoning",
    "response.reasoning_text.delta": "reasoning",
}
T = TurnId("t")


@dataclass
class Answer:
    """A Responses stream's events (numbered from 0) and the choice it must rebuild."""

    events: list[dict[str, Any]] = field(default_factory=list)
    text: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TEXT_EVENTS.values(), ""))
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # id, name, arguments

    def add(self, kind: str, **fields: Any) -> None:
        """Append an event with the next sequence number."""
        self.events.append({"type": kind, "sequence_number": len(self.events), **fields})

    def expected(self) -> dict[str, Any]:
        """Choice 0 as the TURN shape has it (without finish_reason)."""
        calls = [
            {"index": i, "id": cid, "name": name, "arguments": arguments}
            for i, (cid, name, arguments) in enumerate(self.calls)
        ]
        return {"index": 0, **self.text, "tool_calls": calls}

    def sse(self) -> list[SSEEvent]:
        """The events as OpenAI sends them: ``event:`` the type, ``data:`` the JSON."""
        return [SSEEvent(json.dumps(e, ensure_ascii=False), e["type"]) for e in self.events]


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    """Text, refusal, reasoning and 0-2 function calls, interleaved, then response.completed."""
    texts = draw(st.lists(st.tuples(st.sampled_from(list(TEXT_EVENTS)), st.text(max_size=6))))
    fragments = draw(st.lists(st.lists(st.text(max_size=8), max_size=4), max_size=2))
    # One queue per source; each call's queue starts with its announcement.
    queues: list[list[Any]] = [[("text", k, p) for k, p in texts]]
    queues += [
        [("added", c), *(("args", c, f) for f in frags)] for c, frags in enumerate(fragments)
    ]
    answer = Answer()
    answer.add("response.created", response={"id": "resp_1", "status": "in_progress"})
    answer.add("response.output_item.added", output_index=0, item={"id": "msg", "type": "message"})
    arguments = [""] * len(fragments)
    order: list[int] = []  # calls in the order they are announced
    while any(queues):
        queue = draw(st.sampled_from([q for q in queues if q]))
        op = queue.pop(0)
        if op[0] == "text":
            answer.add(op[1], item_id="msg", output_index=0, content_index=0, delta=op[2])
            answer.text[TEXT_EVENTS[op[1]]] += op[2]
        elif op[0] == "added":
            order.append(op[1])
            item = {"id": f"fc_{op[1]}", "type": "function_call", "arguments": ""}
            item |= {"call_id": f"call_{op[1]}", "name": f"fn_{op[1]}"}
            answer.add("response.output_item.added", output_index=op[1] + 1, item=item)
        else:
            where = draw(st.sampled_from(["item_id", "output_index"]))
            at = {"item_id": f"fc_{op[1]}"} if where == "item_id" else {}
            answer.add(
                "response.function_call_arguments.delta",
                output_index=op[1] + 1,
                delta=op[2],
                **at,
            )
            arguments[op[1]] += op[2]
    answer.calls = [(f"call_{c}", f"fn_{c}", arguments[c]) for c in order]
    usage = {"input_tokens": 1, "output_tokens": len(answer.events), "total_tokens": 9}
    answer.add("response.completed", response={"id": "resp_1", "usage": usage, "output": []})
    return answer


def play(parts: list[bytes], snapshot_before: int) -> tuple[Any, Snapshot]:
    """Feed the byte parts to a Responses turn, one batch per read; snapshot at a point."""
    room = RoomState(RoomName("r"), "e")
    started = room.start_turn(PromptRequest("q"), turn_id=T, model="m", now=0.0, api="responses")
    assert started.event is not None
    events: list[SequencedEvent] = [started.event]
    decoder = SSEDecoder()
    snap = room.snapshot()
    for k, part in enumerate(parts):
        if k == snapshot_before:
            snap = room.snapshot()
        events.extend(room.feed_many(T, decoder.feed(part), 1.0))
    events.extend(room.feed_many(T, decoder.close(), 1.0))
    if snapshot_before >= len(parts):
        snap = room.snapshot()
    return events, snap


def rebuilt(snap: Snapshot, events: list[SequencedEvent]) -> list[dict[str, Any]]:
    """What a client rebuilds from a snapshot and the events after its seq (no gap, no dup)."""
    rebuild = Rebuild(keep_text=True)
    for msg in [snap, *(e for e in events if e.seq > snap.seq)]:
        rebuild.apply(json.loads(encode(msg)))
    assert rebuild.problems == []
    (turn,) = rebuild.turns.values()
    return turn.choices()


def assert_rebuilds(choices: list[dict[str, Any]], answer: Answer) -> None:
    """The rebuilt choices are the answer's (absent only when nothing ever grew)."""
    expected = answer.expected()
    empty = {"index": 0, "content": "", "reasoning": "", "refusal": "", "tool_calls": []}
    assert choices in ([], [expected]) if expected == empty else choices == [expected]


def joined(deltas: list[ChoiceDelta]) -> list[dict[str, Any]]:
    """The choices a client builds by appending these deltas' wire frames in order."""
    turn = TurnText(keep=True)
    for n, delta in enumerate(deltas):
        turn.apply_choices(
            json.loads(encode(Delta(seq=n + 2, turn=T, choices=(delta,))))["choices"]
        )
    return turn.choices()


def cut(body: bytes, offsets: list[int]) -> list[bytes]:
    """``body`` split at these offsets."""
    bounds = [0, *sorted(set(offsets)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


def sse_bytes(events: list[SSEEvent]) -> bytes:
    """SSE wire bytes of the events."""
    return b"".join(f"event: {e.event}\ndata: {e.data}\n\n".encode() for e in events)


@SETTINGS
@given(answers(), st.data())
def test_any_chunking_batching_and_snapshot_point_rebuild_the_answer(
    answer: Answer, data: st.DataObject
) -> None:
    """Snapshot + later deltas rebuild text and arguments exactly; seqs go 1, 2, 3..."""
    body = sse_bytes(answer.sse())
    parts = cut(body, data.draw(st.lists(st.integers(0, len(body)), max_size=12)))
    events, snap = play(parts, data.draw(st.integers(0, len(parts))))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    end = events[-1]
    assert isinstance(end, TurnEnd)
    assert end.status == "completed"
    finish = "tool_calls" if answer.calls else "stop"
    assert [(c.index, c.finish_reason) for c in end.choices] == [(0, finish)]
    assert end.usage is not None
    assert end.usage["completion_tokens"] == len(answer.events) - 1
    assert_rebuilds(rebuilt(snap, events), answer)


@SETTINGS
@given(answers(), st.data())
def test_a_replay_from_any_point_after_any_point_changes_nothing(
    answer: Answer, data: st.DataObject
) -> None:
    """Feeding events k.. again after reading up to j >= k (a re-attach) adds no text."""
    sse = answer.sse()
    upto = data.draw(st.integers(0, len(sse)))
    again = data.draw(st.integers(0, upto))
    once = ResponsesAccumulator()
    for event in sse:
        once.feed(once.parse(event.data), event.event)
    twice = ResponsesAccumulator()
    grown: list[ChoiceDelta] = []
    for event in [*sse[:upto], *sse[again:]]:
        grown.extend(twice.feed(twice.parse(event.data), event.event))
    assert twice.views() == once.views()
    assert (twice.usage, twice.ending) == (once.usage, once.ending)
    # Once the terminal event was read nothing more is looked at, replays included.
    assert twice.replayed == (upto - again if upto < len(sse) else 0)
    assert twice.last_sequence_number == len(sse) - 1
    assert twice.response_id == "resp_1"
    assert_rebuilds(joined(grown), answer)


@SETTINGS
@given(answers(), st.data())
def test_a_room_fed_a_replay_keeps_its_seqs_continuous(answer: Answer, data: st.DataObject) -> None:
    """A room re-fed the stream from any earlier point makes no extra delta; no seq gap."""
    sse = answer.sse()
    upto = data.draw(st.integers(0, len(sse) - 1))
    again = data.draw(st.integers(0, upto))
    room = RoomState(RoomName("r"), "e")
    started = room.start_turn(PromptRequest("q"), turn_id=T, model="m", now=0.0, api="responses")
    assert started.event is not None
    events: list[SequencedEvent] = [started.event]
    for batch in (sse[:upto], sse[again:]):
        events.extend(room.feed_many(T, batch, 1.0))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert isinstance(events[-1], TurnEnd)
    assert all(isinstance(e, Delta) for e in events[1:-1])
    assert len(events) <= 4  # start, at most one delta per batch, end
    assert_rebuilds(rebuilt(RoomState(RoomName("r"), "e").snapshot(), events), answer)
