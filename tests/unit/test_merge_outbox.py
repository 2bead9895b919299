"""merge_deltas (lossless, first_seq) and the subscriber Outbox (merge when behind, overflow)."""

from __future__ import annotations

import pytest

from server.core.codec import encode
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
from server.core.outbox import Outbox

CD = ChoiceDelta
TC = ToolCallDelta


def d(seq: int, *choices: ChoiceDelta, turn: str = "t", first: int | None = None) -> Delta:
    """A delta of ``turn`` at ``seq``."""
    return Delta(seq=seq, turn=turn, choices=choices, first_seq=first)


def test_merged_strings_are_the_concatenation() -> None:
    """Every string of the merged delta is the concatenation, per choice, in seq order."""
    merged = merge_deltas(
        [
            d(4, CD(0, content="Wh", reasoning="r1")),
            d(5, CD(1, content="A"), CD(0, content="y", refusal="no")),
            d(6, CD(0, reasoning="r2", refusal="pe")),
            d(7, CD(1, content=" man")),
        ]
    )
    assert merged == d(
        7,
        CD(0, content="Why", reasoning="r1r2", refusal="nope"),
        CD(1, content="A man"),
        first=4,
    )


def test_tool_calls_merge_first_id_and_name_win_arguments_concatenate() -> None:
    """Tool-call id/name keep their first value; arguments append per call index."""
    merged = merge_deltas(
        [
            d(1, CD(0, tool_calls=(TC(0, "call_1", "f", "{"),))),
            d(2, CD(0, tool_calls=(TC(1, "call_2", "g"), TC(0, arguments='"a"')))),
            d(3, CD(0, tool_calls=(TC(0, "other", "h", "}"), TC(1, arguments="[]")))),
            d(4, CD(0, tool_calls=(TC(1, arguments=None),))),
        ]
    )
    assert merged.choices == (
        CD(0, tool_calls=(TC(0, "call_1", "f", '{"a"}'), TC(1, "call_2", "g", "[]"))),
    )
    assert merged.first_seq == 1


def test_tool_call_id_and_name_seen_late_are_kept() -> None:
    """A call whose id/name arrive after its first fragment still gets them."""
    merged = merge_deltas(
        [
            d(1, CD(0, tool_calls=(TC(0, arguments="x"),))),
            d(2, CD(0, tool_calls=(TC(0, "c", "f"),))),
        ]
    )
    assert merged.choices == (CD(0, tool_calls=(TC(0, "c", "f", "x"),)),)


def test_one_delta_merges_to_itself_without_first_seq() -> None:
    """Merging a single delta gives it back, with no first_seq."""
    only = d(9, CD(0, content="a"))
    assert merge_deltas([only]) == only
    assert merge_deltas([only]).first_seq is None


def test_a_merged_delta_merges_again() -> None:
    """A delta that already has first_seq merges with the next, keeping its first_seq."""
    once = merge_deltas([d(3, CD(0, content="a")), d(4, CD(0, content="b"))])
    assert once.first_seq == 3
    twice = merge_deltas([once, d(5, CD(0, content="c"))])
    assert twice == d(5, CD(0, content="abc"), first=3)
    later = merge_deltas([d(2, CD(0, content="z")), once])
    assert later == d(4, CD(0, content="zab"), first=2)
    assert merge_deltas([once]) == once


@pytest.mark.parametrize(
    "deltas",
    [
        [],
        [d(1, CD(0, content="a")), d(2, CD(0, content="b"), turn="u")],
        [d(1, CD(0, content="a")), d(3, CD(0, content="b"))],
        [d(2, CD(0, content="a")), d(1, CD(0, content="b"))],
        [d(1, CD(0, content="a")), d(1, CD(0, content="a"))],
        [d(4, CD(0, content="a"), first=3), d(6, CD(0, content="b"), first=6)],
        [d(4, CD(0, content="a")), d(6, CD(0, content="b"), first=4)],
    ],
    ids=["empty", "mixed-turns", "gap", "backwards", "repeat", "gap-after-merged", "overlap"],
)
def test_merge_refuses_what_is_not_one_consecutive_run(deltas: list[Delta]) -> None:
    """Empty input, mixed turns, gaps, repeats and overlaps raise ValueError."""
    with pytest.raises(ValueError, match=r"nothing to merge|consecutive"):
        merge_deltas(deltas)


def test_merge_refuses_the_same_delta_object_twice() -> None:
    """Listing one Delta object twice is a repeat, not a consecutive run."""
    same = d(1, CD(0, content="a"))
    with pytest.raises(ValueError, match="consecutive"):
        merge_deltas([same, same])


# --- Outbox -----------------------------------------------------------------------------


def push(box: Outbox, msg: ServerMessage) -> bool:
    """Push a message with its real encoding."""
    return box.push(msg, encode(msg))


def drain(box: Outbox) -> list[bytes]:
    """Pop everything."""
    out = []
    while (data := box.pop()) is not None:
        out.append(data)
    return out


START = TurnStart(seq=1, turn="t", prompt="p", model="m", started_at=1.0)
END = TurnEnd(
    seq=5, turn="t", status="completed", choices=(ChoiceEnd(0, "stop"),), usage=None, error=None
)


def test_push_under_the_limit_keeps_frames_in_order() -> None:
    """Under the limit every frame is kept as pushed and popped in order."""
    box = Outbox(limit=10_000)
    msgs: list[ServerMessage] = [START, d(2, CD(0, content="a")), Presence(3), END]
    assert all(push(box, m) for m in msgs)
    assert len(box) == 4
    assert box.size == sum(len(encode(m)) for m in msgs)
    assert drain(box) == [encode(m) for m in msgs]
    assert (len(box), box.size, box.merged) == (0, 0, 0)
    assert box.pop() is None


def test_pop_keeps_size_in_step() -> None:
    """pop() lowers size by the popped frame's length."""
    box = Outbox(limit=0)
    box.push(START, b"12345")
    box.push(Presence(1), b"123")
    assert box.size == 8
    assert box.pop() == b"12345"
    assert box.size == 3


def test_over_the_limit_deltas_of_one_turn_merge() -> None:
    """Over the limit, queued deltas of one turn merge into one re-encoded delta."""
    deltas = [d(s, CD(0, content=c)) for s, c in [(2, "a"), (3, "b"), (4, "c")]]
    merged = d(4, CD(0, content="abc"), first=2)
    final: list[ServerMessage] = [START, merged, END, Presence(2)]
    limit = sum(len(encode(m)) for m in final)
    box = Outbox(limit=limit)
    assert push(box, START)
    assert all(push(box, x) for x in deltas)
    assert push(box, END)
    assert push(box, Presence(2))
    assert box.merged == 2
    assert len(box) == 4
    assert box.size == limit
    assert drain(box) == [encode(START), encode(merged), encode(END), encode(Presence(2))]


def test_non_deltas_keep_their_place_between_runs() -> None:
    """TurnStart/TurnEnd/Presence stay where they were; each run of deltas merges apart."""
    second = TurnStart(seq=6, turn="u", prompt="p", model="m", started_at=2.0)
    msgs: list[ServerMessage] = [
        START,
        d(2, CD(0, content="a")),
        d(3, CD(0, content="b")),
        Presence(1),
        d(4, CD(0, content="c")),
        END,
        second,
        d(7, CD(0, content="x"), turn="u"),
        d(8, CD(0, content="y"), turn="u"),
    ]
    box = Outbox(limit=1)
    results = [push(box, m) for m in msgs]
    assert not any(results)
    assert drain(box) == [
        encode(START),
        encode(d(3, CD(0, content="ab"), first=2)),
        encode(Presence(1)),
        encode(d(4, CD(0, content="c"))),
        encode(END),
        encode(second),
        encode(d(8, CD(0, content="xy"), turn="u", first=7)),
    ]
    assert box.merged == 2


def test_deltas_of_different_turns_are_not_merged() -> None:
    """Adjacent deltas of two turns stay two runs (as can happen after a resume replay)."""
    box = Outbox(limit=1)
    for m in [
        d(2, CD(0, content="a")),
        d(3, CD(0, content="b")),
        d(7, CD(0, content="x"), turn="u"),
        d(8, CD(0, content="y"), turn="u"),
    ]:
        push(box, m)
    assert drain(box) == [
        encode(d(3, CD(0, content="ab"), first=2)),
        encode(d(8, CD(0, content="xy"), turn="u", first=7)),
    ]


def test_still_over_the_limit_returns_false() -> None:
    """When merging cannot bring the backlog under the limit, push returns False."""
    box = Outbox(limit=len(encode(START)) + 5)
    assert push(box, START)
    assert not push(box, Presence(1))
    assert box.merged == 0
    assert len(box) == 2


def test_merging_can_bring_the_backlog_back_under() -> None:
    """A push that overflows is accepted when merging makes room, and size is recomputed."""
    deltas = [d(s, CD(0, content="x" * 10)) for s in range(2, 12)]
    merged = merge_deltas(deltas)
    box = Outbox(limit=len(encode(merged)) + 1)
    assert all(push(box, x) for x in deltas)
    assert len(box) == 1
    assert box.size == len(encode(merged))
    assert box.pop() == encode(merged)


def test_limit_zero_is_unbounded() -> None:
    """limit=0 never overflows; without backpressure or a queue-length rule nothing merges."""
    box = Outbox(limit=0, behind_frames=0)
    deltas = [d(s, CD(0, content="x" * 100)) for s in range(2, 1002)]
    assert all(push(box, x) for x in deltas)
    assert (len(box), box.merged) == (1000, 0)
