"""WebSocket framing of server messages (RFC 6455, section 5.2), done once per event.

A server's frames are never masked (section 5.1), so one event's frame is the same bytes for
every subscriber: it is built once and handed to each transport as it is.
"""

from __future__ import annotations

import struct

FIN_TEXT = 0x81  # FIN bit and opcode 0x1 (text); RSV bits clear: no compression
PING = bytes((0x89, 0))  # a final ping (opcode 0x9) with no payload (section 5.5.2)
_SHORT = struct.Struct("!BB").pack
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload`` (section 5.2's length forms)."""
    n = len(payload)
    if n < 126:
        return _SHORT(FIN_TEXT, n) + payload
    if n < 1 << 16:
        return _MEDIUM(FIN_TEXT, 126, n) + payload
    return _LONG(FIN_TEXT, 127, n) + payload


class FrameOnce:
    """The frame of the payload asked for last.

    The fan-out loop asks for every subscriber of an event in turn, with the same payload
    object, so the frame is built once per event; a strong reference to the payload keeps its
    identity from being reused.
    """

    __slots__ = ("_frame", "_payload")

    def __init__(self) -> None:
        self._payload: bytes | None = None
        self._frame = b""

    def frame(self, payload: bytes) -> bytes:
        """``text_frame(payload)``, built only when ``payload`` is not the last one."""
        if payload is not self._payload:
            self._frame = text_frame(payload)
            self._payload = payload
        return self._frame
