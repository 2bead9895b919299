"""Properties: any chunking, any snapshot point, any merge partition rebuilds the exact text."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.accumulator import ChunkAccumulator
from server.core.codec import encode
from server.core.merge import merge_deltas
from server.core.messages import Delta, PromptRequest, SequencedEvent, Snapshot, TurnEnd
from server.core.room import RoomState
from server.core.sse import SSEDecoder
from server.core.types import RoomName, TurnId
from server.tools.rebuild import Rebuild

SETTINGS = settings(max_examples=300, deadline=None)
FIELDS = ("content", "reasoning_content", "refusal")
VIEW_FIELD = {"content": "content", "reasoning_content": "reasoning", "refusal": "refusal"}


@dataclass
class Stream:
    """An upstream answer: its pieces, its SSE bytes cut into parts, and a snapshot point."""

    n: int
    pieces: list[tuple[int, str, str]]
    parts: list[bytes]
    snapshot_before: int

    def expected(self) -> dict[tuple[int, str], str]:
        """The exact non-empty text per (choice, view field) the upstream produced."""
        out = {(i, VIEW_FIELD[f]): "" for i in range(self.n) for f in FIELDS}
        for index, field, piece in self.pieces:
            out[index, VIEW_FIELD[field]] += piece
        return nonempty(out)


def nonempty(text: dict[tuple[int, str], str]) -> dict[tuple[int, str], str]:
    """Drop the empty strings (a choice with no text may or may not be in a snapshot)."""
    return {k: v for k, v in text.items() if v}


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    """A random n-choice answer serialised as OpenAI SSE and split at random byte offsets."""
    n = draw(st.integers(1, 3))
    pieces = draw(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.sampled_from(FIELDS), st.text(max_size=6)),
            max_size=20,
        )
    )
    role = [{"index": i, "delta": {"role": "assistant", "content": ""}} for i in range(n)]
    chunks: list[dict[str, Any]] = [{"choices": role}]
    for index, field, piece in pieces:
        chunks.append({"choices": [{"index": index, "delta": {field: piece}}]})
    chunks.append(
        {"choices": [{"index": i, "delta": {}, "finish_reason": "stop"} for i in range(n)]}
    )
    chunks.append({"choices": [], "usage": {"total_tokens": len(pieces)}})
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"])).encode()
    payloads = [json.dumps(c, ensure_ascii=False) for c in chunks] + ["[DONE]"]
    body = b"".join(b"data: " + p.encode() + eol + eol for p in payloads)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=12))))
    bounds = [0, *cuts, len(body)]
    parts = [body[a:b] for a, b in itertools.pairwise(bounds)]
    return Stream(n, pieces, parts, draw(st.integers(0, len(parts))))


def play(stream: Stream) -> tuple[list[SequencedEvent], Snapshot]:
    """Feed the byte parts through SSEDecoder into a RoomState; snapshot at the drawn point."""
    room = RoomState(RoomName("r"), "e")
    started = room.start_turn(PromptRequest("q"), turn_id=TurnId("t"), model="m", now=0.0)
    assert started.event is not None
    events: list[SequencedEvent] = [started.event]
    decoder = SSEDecoder()
    snap = room.snapshot()
    for k, part in enumerate(stream.parts):
        if k == stream.snapshot_before:
            snap = room.snapshot()
        for sse in decoder.feed(part):
            events.extend(room.feed(TurnId("t"), sse, 1.0))
    for sse in decoder.close():
        events.extend(room.feed(TurnId("t"), sse, 1.0))
    if stream.snapshot_before == len(stream.parts):
        snap = room.snapshot()
    return events, snap


def rebuild(snap: Snapshot, events: list[SequencedEvent]) -> dict[tuple[int, str], str]:
    """What a client rebuilds from the snapshot's frame and the frames after its seq.

    See ``server.tools.rebuild``; it must see no gap or duplicate.
    """
    rebuilt = Rebuild(keep_text=True)
    for msg in [snap, *(e for e in events if e.seq > snap.seq)]:
        rebuilt.apply(json.loads(encode(msg)))
    assert rebuilt.problems == []
    return {
        (choice["index"], field): choice[field]
        for turn in rebuilt.turns.values()
        for choice in turn.choices()
        for field in VIEW_FIELD.values()
    }


def assert_continuous(events: list[SequencedEvent]) -> None:
    """Each event's first_seq (or seq) is the previous event's seq + 1."""
    for prev, event in itertools.pairwise(events):
        first = event.first_seq if isinstance(event, Delta) else None
        start = event.seq if first is None else first
        assert start == prev.seq + 1, (prev, event)


@SETTINGS
@given(streams())
def test_any_chunking_and_snapshot_point_rebuilds_the_text(stream: Stream) -> None:
    """Snapshot + later deltas rebuild each choice's text exactly; seqs go 1, 2, 3... no gap."""
    events, snap = play(stream)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    end = events[-1]
    assert isinstance(end, TurnEnd)
    assert end.status == "completed"
    assert end.usage == {"total_tokens": len(stream.pieces)}
    assert sum(isinstance(e, Delta) for e in events) == sum(1 for *_, p in stream.pieces if p)
    assert nonempty(rebuild(snap, events)) == stream.expected()


@SETTINGS
@given(streams(), st.data())
def test_any_merge_partition_rebuilds_the_text(stream: Stream, data: st.DataObject) -> None:
    """Merging consecutive runs of deltas anyhow keeps the text and passes the continuity check."""
    events, _ = play(stream)
    start, deltas, end = events[0], events[1:-1], events[-1]
    assert all(isinstance(x, Delta) for x in deltas)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(deltas))), max_size=8))))
    bounds = [0, *[c for c in cuts if c < len(deltas)], len(deltas)]
    merged: list[SequencedEvent] = [start]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            run = merge_deltas([x for x in deltas[a:b] if isinstance(x, Delta)])
            assert run.first_seq == (None if b - a == 1 else deltas[a].seq)
            merged.append(run)
    merged.append(end)
    assert_continuous(merged)
    rebuilt = rebuild(RoomState(RoomName("r"), "e").snapshot(), merged)
    assert nonempty(rebuilt) == stream.expected()


@st.composite
def tool_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[str], list[int]]:
    """1-2 tool calls whose arguments are cut anywhere, interleaved, with provider quirks."""
    args = draw(st.lists(st.text(max_size=30), min_size=1, max_size=2))
    with_index = draw(st.booleans())
    repeat = draw(st.booleans())
    frags: list[list[str]] = []
    for a in args:
        cuts = sorted(set(draw(st.lists(st.integers(0, len(a)), max_size=6))))
        bounds = [0, *cuts, len(a)]
        frags.append([a[x:y] for x, y in itertools.pairwise(bounds)])
    order: list[int] = []
    pending = [len(f) for f in frags]
    while any(pending):
        live = [i for i, p in enumerate(pending) if p]
        # Without index or repeated ids, fragments can only be told apart in order.
        i = draw(st.sampled_from(live)) if (with_index or repeat) else live[0]
        order.append(i)
        pending[i] -= 1
    # With an index the call keeps it; without, calls are numbered as they first appear.
    first_seen = list(dict.fromkeys(order))
    indexes = [i if with_index else first_seen.index(i) for i in range(len(args))]
    chunks: list[dict[str, Any]] = []
    taken = [0] * len(frags)
    for i in order:
        first = taken[i] == 0
        call: dict[str, Any] = {"function": {"arguments": frags[i][taken[i]]}}
        taken[i] += 1
        if with_index:
            call["index"] = i
        if first or repeat:
            call["id"] = f"call_{i}"
            call["function"]["name"] = f"fn_{i}"
        chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    return chunks, args, indexes


@SETTINGS
@given(tool_streams())
def test_tool_call_arguments_split_anyhow_rebuild_exactly(
    case: tuple[list[dict[str, Any]], list[str], list[int]],
) -> None:
    """Arguments cut anywhere rebuild exactly; id and name are reported once per call."""
    chunks, args, indexes = case
    acc = ChunkAccumulator()
    grown: dict[int, str] = {}
    ids: list[tuple[int, str | None, str | None]] = []
    for chunk in chunks:
        for choice in acc.feed(chunk):
            for call in choice.tool_calls:
                grown[call.index] = grown.get(call.index, "") + (call.arguments or "")
                if call.id is not None or call.name is not None:
                    ids.append((call.index, call.id, call.name))
    (view,) = acc.views()
    assert [(c.index, c.id, c.name, c.arguments) for c in view.tool_calls] == sorted(
        (indexes[i], f"call_{i}", f"fn_{i}", a) for i, a in enumerate(args)
    )
    assert sorted(ids) == sorted((indexes[i], f"call_{i}", f"fn_{i}") for i in range(len(args)))
    assert {indexes[i]: grown.get(indexes[i], "") for i in range(len(args))} == {
        indexes[i]: a for i, a in enumerate(args)
    }
