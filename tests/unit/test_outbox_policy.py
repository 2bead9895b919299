"""The slow-consumer policy of the outbox.

When deltas merge, what the limit counts, the join burst, coalescing, the bypass for subscribers
that keep up; the frame-size arithmetic that keeps merged runs' sizes exact; and WebSocket framing
done once per event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from server.core.codec import encode
from server.core.framesize import delta_structure, digits, text_bytes
from server.core.merge import merge_deltas
from server.core.messages import (
    ChoiceDelta,
    ChoiceEnd,
    Delta,
    Presence,
    ServerMessage,
    ToolCallDelta,
    TurnEnd,
    TurnStart,
)
from server.core.outbox import BEHIND_FRAMES, Outbox
from server.core.wsframe import FrameOnce, text_frame

CD = ChoiceDelta
TC = ToolCallDelta


def d(seq: int, text: str = "x", turn: str = "t", first: int | None = None) -> Delta:
    """A one-choice content delta."""
    return Delta(seq=seq, turn=turn, choices=(CD(0, content=text),), first_seq=first)


START = TurnStart(seq=1, turn="t", prompt="p", model="m", started_at=1.0)
END = TurnEnd(
    seq=9, turn="t", status="completed", choices=(ChoiceEnd(0, "stop"),), usage=None, error=None
)


def drain(box: Outbox) -> list[bytes]:
    """Pop everything."""
    out = []
    while (data := box.pop()) is not None:
        out.append(data)
    return out


@dataclass(frozen=True)
class Push:
    """One push: the message and the bytes waiting in the transport at that moment."""

    msg: ServerMessage
    in_flight: int = 0


@dataclass(frozen=True)
class Case:
    """Pushes into an outbox and the frames it must then give out, in order."""

    pushes: tuple[Push, ...]
    frames: tuple[ServerMessage, ...]
    behind_frames: int = BEHIND_FRAMES
    coalescing: bool = False


CASES = {
    "keeping up: every delta as it is": Case(
        (Push(START), Push(d(2, "a")), Push(d(3, "b"))), (START, d(2, "a"), d(3, "b"))
    ),
    "socket backed up: the new delta joins the tail": Case(
        (Push(d(2, "a")), Push(d(3, "b"), 10), Push(d(4, "c"), 10)),
        (merge_deltas([d(2, "a"), d(3, "b"), d(4, "c")]),),
    ),
    "coalescing window: deltas join the tail": Case(
        (Push(d(2, "a")), Push(d(3, "b"))), (d(3, "ab", first=2),), coalescing=True
    ),
    "queue length rule: deltas join once that many frames wait": Case(
        (Push(d(2, "a")), Push(d(3, "b")), Push(d(4, "c")), Push(d(5, "d"))),
        (d(2, "a"), d(5, "bcd", first=3)),
        behind_frames=2,
    ),
    "no queue length rule: nothing merges without backpressure": Case(
        tuple(Push(d(s)) for s in range(2, 30)), tuple(d(s) for s in range(2, 30)), 0
    ),
    "different turns never merge": Case(
        (Push(d(2, "a")), Push(d(3, "b", turn="u"), 10)), (d(2, "a"), d(3, "b", turn="u"))
    ),
    "a gap in seqs never merges": Case(
        (Push(d(2, "a")), Push(d(4, "b"), 10)), (d(2, "a"), d(4, "b"))
    ),
    "a delta does not join a turn.start": Case(
        (Push(START), Push(d(2, "a"), 10)), (START, d(2, "a"))
    ),
    "non-deltas keep their place between runs": Case(
        (
            Push(START),
            Push(d(2, "a"), 5),
            Push(d(3, "b"), 5),
            Push(Presence(4), 5),
            Push(d(4, "c"), 5),
            Push(d(5, "d"), 5),
            Push(END, 5),
        ),
        (START, d(3, "ab", first=2), Presence(4), d(5, "cd", first=4), END),
    ),
    "an already merged delta joins and is joined": Case(
        (Push(d(3, "ab", first=2)), Push(d(5, "cd", first=4), 1), Push(d(6, "e"), 1)),
        (d(6, "abcde", first=2),),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_merge_rules(case: Case) -> None:
    """Each case gives out exactly its frames, each run merged and encoded losslessly."""
    box = Outbox(limit=0, behind_frames=case.behind_frames)
    box.coalescing = case.coalescing
    for push in case.pushes:
        assert box.push(push.msg, encode(push.msg), push.in_flight)
    assert box.merged == len(case.pushes) - len(case.frames)
    assert drain(box) == [encode(m) for m in case.frames]
    assert (len(box), box.size) == (0, 0)


def test_keeping_up_shares_the_one_encoding() -> None:
    """A subscriber that keeps up is given the very bytes object that was pushed."""
    box = Outbox(limit=1000)
    data = encode(d(2))
    box.push(d(2), data)
    assert box.pop() is data


SHAPES = {
    "ascii": ["Hello", " world", "!"],
    "utf-8": ["Café ", "naïve 🚀", " déjà", " 日本語"],
    "escapes": ['say "hi"', "\n\ttab\\", "\x01"],
    "long seqs": ["a"] * 15,
}


@pytest.mark.parametrize("pieces", SHAPES.values(), ids=SHAPES.keys())
def test_a_run_counts_exactly_its_merged_frame(pieces: list[str]) -> None:
    """While the run keeps its shape, its size is the merged frame's length, to the byte."""
    box = Outbox(limit=0)
    deltas = [d(seq, text) for seq, text in enumerate(pieces, start=5)]
    for delta in deltas:
        box.push(delta, encode(delta), in_flight=1)
    assert len(box) == 1
    size = box.size
    [frame] = drain(box)
    assert frame == encode(merge_deltas(deltas))
    assert size == len(frame)


def test_a_run_that_grows_a_field_is_under_by_that_field_only() -> None:
    """A later part that opens a new field adds its text; only the field's key is missing."""
    first = Delta(seq=2, turn="t", choices=(CD(0, content="a"),))
    second = Delta(seq=3, turn="t", choices=(CD(0, reasoning="r"),))
    box = Outbox(limit=0)
    box.push(first, encode(first))
    box.push(second, encode(second), in_flight=1)
    size = box.size
    [frame] = drain(box)
    assert len(frame) - size == len(',"reasoning":""')


# --- the limit ------------------------------------------------------------------------


def test_over_the_limit_earlier_deltas_merge_then_the_push_is_accepted() -> None:
    """Deltas queued while keeping up merge when the limit is hit, and the push is accepted."""
    deltas = [d(s, "y" * 20) for s in range(2, 8)]
    merged = merge_deltas(deltas)
    box = Outbox(limit=len(encode(merged)))
    assert all(box.push(x, encode(x)) for x in deltas)
    assert len(box) == 1
    assert box.pop() == encode(merged)


def test_runs_next_to_each_other_merge_when_the_limit_is_hit() -> None:
    """Two runs of one turn (the socket drained between them) merge into one at the limit."""
    box = Outbox(limit=0)
    box.push(d(2, "a"), encode(d(2, "a")))
    box.push(d(3, "b"), encode(d(3, "b")), in_flight=1)
    box.push(d(4, "c"), encode(d(4, "c")))
    box.push(d(5, "e"), encode(d(5, "e")), in_flight=1)
    assert len(box) == 2
    box.limit = box.size - 1
    assert box.push(d(6, "f"), encode(d(6, "f")))
    assert len(box) == 1
    assert drain(box) == [encode(d(6, "abcef", first=2))]


def test_bytes_in_the_transport_count_against_the_limit() -> None:
    """The same push is accepted or refused depending on what waits in the transport."""
    msg = d(2)
    room = 100 - len(encode(msg))
    assert Outbox(limit=100).push(msg, encode(msg), in_flight=room)
    assert not Outbox(limit=100).push(msg, encode(msg), in_flight=room + 1)


def test_still_over_after_merging_is_an_overflow_and_clear_drops_it() -> None:
    """Non-mergeable events past the limit make push answer False; clear() empties it."""
    box = Outbox(limit=len(encode(START)) + len(encode(END)))
    assert box.push(START, encode(START))
    assert box.push(END, encode(END))
    assert not box.push(Presence(1), encode(Presence(1)))
    box.clear()
    assert (len(box), box.size, box.pop()) == (0, 0, None)


def test_peak_is_the_largest_accepted_backlog() -> None:
    """The peak records queue plus transport bytes at their largest accepted value."""
    box = Outbox(limit=1000)
    box.push(START, encode(START), in_flight=300)
    box.pop()
    box.push(Presence(1), encode(Presence(1)))
    assert box.peak == len(encode(START)) + 300


# --- the join burst -------------------------------------------------------------------


BIG = d(2, "z" * 500)


def test_the_join_burst_is_never_refused() -> None:
    """While joining, nothing is refused, however big; merging rules still apply."""
    box = Outbox(limit=10, joining=True)
    assert box.push(BIG, encode(BIG))
    assert box.push(d(3), encode(d(3)), in_flight=1)
    assert len(box) == 1


def test_the_burst_is_exempt_in_the_queue_and_in_the_transport_until_sent() -> None:
    """After joined(), burst bytes do not count, queued or in flight; once sent, they do."""
    box = Outbox(limit=200, joining=True)
    box.push(BIG, encode(BIG))
    box.joined()
    assert box.sending_burst
    assert box.push(Presence(1), encode(Presence(1)))  # the burst is still queued
    burst = box.pop()
    assert burst is not None
    assert box.push(Presence(2), encode(Presence(2)), in_flight=len(burst))  # in the socket
    assert box.sending_burst
    assert box.push(Presence(3), encode(Presence(3)), in_flight=0)  # the socket took it all
    assert not box.sending_burst
    assert not box.push(Presence(4), encode(Presence(4)), in_flight=190)  # now it counts


def test_joined_twice_and_clear_end_the_burst() -> None:
    """A second joined() changes nothing; clear() forgets the burst."""
    box = Outbox(limit=100, joining=True)
    box.push(BIG, encode(BIG))
    box.joined()
    box.joined()
    assert box.sending_burst
    box.clear()
    assert not box.sending_burst


def test_without_a_join_the_limit_holds_from_the_first_push() -> None:
    """An outbox made without joining enforces its limit at once."""
    assert not Outbox(limit=10).push(BIG, encode(BIG))


# --- coalescing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queued", "in_flight", "expected"),
    [
        ((), 0, False),
        ((START,), 0, False),
        ((START, d(2)), 0, True),
        ((d(2), d(3)), 1, True),
        ((d(2), END), 0, False),
    ],
    ids=["empty", "turn.start", "delta", "run", "turn.end"],
)
def test_a_writer_holds_a_window_only_for_a_delta_at_the_tail(
    queued: tuple[ServerMessage, ...], in_flight: int, expected: bool
) -> None:
    """coalescible() is True only when later deltas could join the tail."""
    box = Outbox(limit=0)
    for msg in queued:
        box.push(msg, encode(msg), in_flight)
    assert box.coalescible() is expected


# --- frame sizes ----------------------------------------------------------------------


FRAMES = {
    "no choices": Delta(seq=0, turn="t", choices=()),
    "every string": Delta(
        seq=12,
        turn="t0a",
        choices=(
            CD(0, content="a", reasoning="é", refusal='"'),
            CD(3, content=""),
        ),
        first_seq=7,
    ),
    "tool calls": Delta(
        seq=123456,
        turn="t",
        choices=(
            CD(
                1,
                tool_calls=(TC(0, id="call_1", name="f", arguments="{"), TC(11), TC(2, name="g")),
            ),
        ),
    ),
    "first_seq equal to seq": Delta(seq=5, turn="t", choices=(CD(0, content="x"),), first_seq=5),
    "non-ascii turn": Delta(seq=1, turn="tür", choices=(CD(-1, content="🚀"),)),
}


@pytest.mark.parametrize("delta", FRAMES.values(), ids=FRAMES.keys())
def test_structure_plus_text_is_the_encoded_length(delta: Delta) -> None:
    """delta_structure mirrors the codec: structure plus text bytes is the frame's length."""
    data = encode(delta)
    strings = []
    for choice in delta.choices:
        strings += [choice.content, choice.reasoning, choice.refusal]
        for call in choice.tool_calls:
            strings += [call.id, call.name, call.arguments]
    text = sum(len(encode_str(s)) for s in strings if s is not None)
    assert delta_structure(delta) + text == len(data)
    assert text_bytes(delta, data) == text


def encode_str(value: str) -> bytes:
    """A string's bytes inside a frame, without its quotes."""
    return json.dumps(value, ensure_ascii=False).encode()[1:-1]


@pytest.mark.parametrize(("n", "chars"), [(0, 1), (9, 1), (10, 2), (123456, 6), (-3, 2)])
def test_digits(n: int, chars: int) -> None:
    """The digits helper counts an integer's JSON characters."""
    assert digits(n) == chars


# --- the bypass -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queued", "in_flight", "joining", "coalescing", "expected"),
    [
        ((), 0, False, False, True),
        ((START,), 0, False, False, False),
        ((), 1, False, False, False),
        ((), 0, True, False, False),
        ((), 0, False, True, False),
    ],
    ids=["keeping up", "something queued", "socket backed up", "joining", "coalescing"],
)
def test_a_frame_skips_the_queue_only_for_a_subscriber_that_keeps_up(
    queued: tuple[ServerMessage, ...],
    in_flight: int,
    joining: bool,
    coalescing: bool,
    expected: bool,
) -> None:
    """bypass() allows writing at once only with nothing queued, joining or in flight."""
    box = Outbox(limit=0, joining=joining)
    for msg in queued:
        box.push(msg, encode(msg))
    box.coalescing = coalescing
    assert box.bypass(in_flight) is expected


def test_a_bypass_ends_the_join_burst() -> None:
    """Once a frame may skip the queue, every byte of the join burst has been sent."""
    box = Outbox(limit=10, joining=True)
    box.push(BIG, encode(BIG))
    box.joined()
    box.pop()
    assert box.sending_burst
    assert box.bypass(0)
    assert not box.sending_burst


# --- WebSocket framing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_text_frames_use_the_shortest_length_form(size: int, header: bytes) -> None:
    """FIN + text opcode, unmasked, with RFC 6455's 7-bit, 16-bit or 64-bit length."""
    payload = b"x" * size
    assert text_frame(payload) == header + payload


def test_frame_once_builds_a_frame_once_per_payload_object() -> None:
    """The same payload object gets the same frame object; another payload a new frame."""
    frames = FrameOnce()
    first, second = b'{"a":1}', b'{"b":2}'
    framed = frames.frame(first)
    assert framed == text_frame(first)
    assert frames.frame(first) is framed
    assert frames.frame(second) == text_frame(second)
