"""The protocol's vocabulary: every WebSocket close code and every error code, named once.

The values are the wire's (PROTOCOL.md, "Close codes" and the HTTP error table): an
``IntEnum`` closes a WebSocket with its number and a ``StrEnum`` encodes as its string, so
using a member instead of a literal changes no byte on the wire.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455, section 7.4.1, and PROTOCOL.md's 4xxx)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect with resume, with backoff
    UNSUPPORTED_DATA = 1003  # a binary frame
    INVALID_TEXT = 1007  # a text frame that is not UTF-8
    MESSAGE_TOO_BIG = 1009  # a frame over limits.max_frame_bytes
    INTERNAL_ERROR = 1011  # also: a room lost history its subscribers had seen
    TRY_AGAIN_LATER = 1013  # server at capacity (the room limit, the broker unavailable)
    SLOW_CONSUMER = 4000
    RATE_LIMITED = 4001
    UNAUTHORIZED = 4500  # a live connection's token expired
    FORBIDDEN = 4501
    TOO_MANY_BAD_FRAMES = 4502
    LIMIT_REACHED = 4503  # subscribers per room or connections per client address


class ErrorCode(StrEnum):
    """Error codes of error frames, HTTP errors and ``turn.end`` errors made by this server.

    ``turn.end`` may also carry an upstream's own code (scrubbed): those stay plain strings.
    """

    # PROTOCOL.md's HTTP error table, and turn_ended of the cancel endpoint
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TURN_IN_PROGRESS = "turn_in_progress"
    TURN_ENDED = "turn_ended"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_ERROR = "upstream_error"
    UNAVAILABLE = "unavailable"
    # The server's own additions (docs/protocol.md)
    INTERNAL_ERROR = "internal_error"  # a fault of this server (HTTP 500, a failed turn)
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    STREAM_BROKEN = "stream_broken"  # not on the wire: a broken stream ends ``truncated``
    BAD_CHUNK = "bad_chunk"  # the upstream sent a chunk that is not JSON, or too long a line
