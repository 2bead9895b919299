"""Server-Sent Events framing of already encoded messages (PROTOCOL.md, "Server-Sent Events").

The codec writes ``type`` first and, for sequenced events, ``seq` second, so an SSE frame
is built from the encoded bytes without decoding them: JSON is encoded once per event for
every subscriber, WebSocket or SSE.
"""

from __future__ import annotations

import re

from .codec import encode
from .messages import ServerMessage
from .text import check_client_text, parse_seq

_HEAD = re.compile(rb'\{"type":"([a-z.]+)"(?:,"seq":(\d+))?')
SEQUENCED = frozenset({b"turn.start", b"delta", b"turn.end"})
KEEPALIVE = b": keep-alive\n\n"


def sse_frame(data: bytes, epoch: bytes) -> bytes:
    """One encoded message as an SSE event: ``event:`` its type, ``id: {epoch}:{seq}``.

    Raises:
        ValueError: when ``data`` is not a message of this codec.
    """
    head = _HEAD.match(data)
    if head is None:
        raise ValueError("not an encoded server message")
    kind, seq = head.group(1), head.group(2)
    out = b"event: " + kind + b"\n"
    if kind in SEQUENCED and seq is not None:
        out += b"id: " + epoch + b":" + seq + b"\n"
    # Compact JSON has no raw line breaks, so the message is one data line.
    return out + b"data: " + data + b"\n\n"


def sse_message(msg: ServerMessage, epoch: str) -> bytes:
    """Encode and frame one message (for messages sent to one subscriber only)."""
    return sse_frame(encode(msg), epoch.encode())


def parse_last_event_id(value: str | None, name: str = "Last-Event-ID") -> tuple[str, int] | None:
    """``{epoch}:{seq}`` from a Last-Event-ID, or None when absent or not of that shape.

    The seq is 1-18 ASCII digits (``parse_seq``); a longer one names no event a room reached.

    Raises:
        ClientError: ``bad_request`` naming ``name`` when the value is not valid Unicode text.
    """
    if not value:
        return None
    check_client_text(value, name)
    epoch, sep, digits = value.rpartition(":")
    seq = parse_seq(digits)
    if not sep or not epoch or seq is None:
        return None
    return epoch, seq
