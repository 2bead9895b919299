"""catch_up: what a subscriber that missed some events gets (runs of deltas merged once)."""

from __future__ import annotations

import pytest

from server.core.catchup import Frame, catch_up
from server.core.codec import encode
from server.core.messages import ChoiceDelta, Delta, Presence, ServerMessage, TurnEnd, TurnStart

CD = ChoiceDelta


def framed(*msgs: ServerMessage) -> list[Frame]:
    """Each message with its own encoding, as the room publishes them."""
    return [(m, encode(m)) for m in msgs]


START = TurnStart(seq=1, turn="t", prompt="p", model="m", started_at=1.0)
D2 = Delta(seq=2, turn="t", choices=(CD(0, content="Wh"),))
D3 = Delta(seq=3, turn="t", choices=(CD(0, content="y"),))
D4 = Delta(seq=4, turn="t", choices=(CD(0, content=" not"),))
END = TurnEnd(seq=5, turn="t", status="completed", choices=(), usage=None, error=None)
OTHER = Delta(seq=9, turn="u", choices=(CD(0, content="x"),))


@pytest.mark.parametrize(
    ("pending", "expected"),
    [
        ([], []),
        ([START], [START]),
        ([D2], [D2]),
        ([D2, D3, D4], [Delta(seq=4, turn="t", choices=(CD(0, content="Why not"),), first_seq=2)]),
        (
            [START, D2, D3, END],
            [START, Delta(seq=3, turn="t", choices=(CD(0, content="Why"),), first_seq=2), END],
        ),
        ([D2, Presence(viewers=3), D3], [D2, Presence(viewers=3), D3]),
        ([D2, OTHER], [D2, OTHER]),  # not consecutive: never merged
    ],
)
def test_runs_of_consecutive_deltas_merge_and_nothing_else_does(
    pending: list[ServerMessage], expected: list[ServerMessage]
) -> None:
    """Consecutive deltas of one turn become one; other events and breaks stay as they were."""
    got = catch_up(framed(*pending))
    assert [msg for msg, _ in got] == expected
    assert all(data == encode(msg) for msg, data in got)


def test_a_lone_delta_keeps_its_shared_encoding() -> None:
    """A delta that merges with nothing goes out as the very bytes every subscriber shares."""
    pending = framed(START, D2)
    got = catch_up(pending)
    assert got[1][1] is pending[1][1]
