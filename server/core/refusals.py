"""When refused client frames close a connection (PROTOCOL.md, close codes 4502 and 4001)."""

from __future__ import annotations

from .codes import CloseCode, ErrorCode


class RefusalCount:
    """Counts one connection's refusals and says when they close it.

    A frame that could not be understood (not JSON, unknown type, a wrong field) is bad; the
    one that brings the count to ``max_bad`` closes with 4502. Prompts refused for their rate
    count in a row; the one that reaches ``max_rate_limited`` closes with 4001, and an accepted
    prompt starts the streak again. Other refusals (turn_in_progress, not_found, ...) are the
    room's state, not the client's fault, and close nothing. 0 means never.
    """

    __slots__ = ("bad", "max_bad", "max_rate_limited", "rate_limited")

    def __init__(self, max_bad: int, max_rate_limited: int) -> None:
        self.max_bad = max_bad
        self.max_rate_limited = max_rate_limited
        self.bad = 0
        self.rate_limited = 0

    def bad_frame(self) -> CloseCode | None:
        """A frame was not understood: the close code, or None to go on."""
        self.bad += 1
        if self.max_bad and self.bad >= self.max_bad:
            return CloseCode.TOO_MANY_BAD_FRAMES
        return None

    def refused(self, code: str) -> CloseCode | None:
        """An understood frame was refused with ``code``: the close code, or None."""
        if code != ErrorCode.RATE_LIMITED:
            return None
        self.rate_limited += 1
        limit = self.max_rate_limited
        return CloseCode.RATE_LIMITED if limit and self.rate_limited >= limit else None

    def prompt_accepted(self) -> None:
        """A prompt passed the rate limit: the streak of refused ones is over."""
        self.rate_limited = 0
