"""SSE framing of encoded messages: event type, id epoch:seq, one data line."""

from __future__ import annotations

import pytest

from server.core.codec import encode
from server.core.messages import (
    ChoiceDelta,
    Delta,
    ErrorFrame,
    Presence,
    ServerMessage,
    Snapshot,
    TurnEnd,
    TurnStart,
    Welcome,
)
from server.core.sse_frames import parse_last_event_id, sse_frame, sse_message

MESSAGES: list[tuple[ServerMessage, bytes]] = [
    (Welcome("r", "ep", 3, "viewer", False, 1), b"event: welcome\n"),
    (Snapshot("r", "ep", 3, ()), b"event: snapshot\n"),
    (TurnStart(4, "t1", "line1\nline2", "m", 1.0), b"event: turn.start\nid: ep:4\n"),
    (
        Delta(seq=7, first_seq=5, turn="t1", choices=(ChoiceDelta(0, content="a\nb"),)),
        b"event: delta\nid: ep:7\n",
    ),
    (TurnEnd(8, "t1", "completed", (), None, None), b"event: turn.end\nid: ep:8\n"),
    (Presence(2), b"event: presence\n"),
    (ErrorFrame("bad_request", "no"), b"event: error\n"),
]


@pytest.mark.parametrize(("msg", "head"), MESSAGES)
def test_frames_carry_type_and_sequenced_ids(msg: ServerMessage, head: bytes) -> None:
    """Every message is one event; sequenced ones carry id epoch:seq; the JSON is one line."""
    data = encode(msg)
    frame = sse_frame(data, b"ep")
    assert frame == head + b"data: " + data + b"\n\n"
    assert frame.count(b"\n") == head.count(b"\n") + 2
    assert sse_message(msg, "ep") == frame


def test_bytes_that_are_not_a_message_are_refused() -> None:
    """Anything not shaped by the codec raises ValueError rather than a wrong frame."""
    with pytest.raises(ValueError, match="not an encoded server message"):
        sse_frame(b'{"seq":1,"type":"delta"}', b"ep")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ep:12", ("ep", 12)),
        ("e:p:3", ("e:p", 3)),
        ("ep:0", ("ep", 0)),
        (None, None),
        ("", None),
        ("ep", None),
        (":3", None),
        ("ep:", None),
        ("ep:-1", None),
        ("ep:x", None),
    ],
)
def test_last_event_id(value: str | None, expected: tuple[str, int] | None) -> None:
    """Last-Event-ID is epoch:seq (the epoch may hold colons); anything else is no resume."""
    assert parse_last_event_id(value) == expected
