"""When a subscriber that stopped reading is dropped (sans-I/O).

The outbox's limit is checked when an event is queued; a subscriber that stopped reading in a
room where nothing happens is never checked that way, and its join burst (a snapshot of many
megabytes, say) waits in its socket's buffer for ever. So, while its writer is busy, the driver
looks now and then: a backlog (its queue plus what waits in its transport, the join burst
included once it was handed over) over the limit, with no progress for ``timeout`` seconds,
means the reader stopped reading: it is dropped (it resumes when it comes back). Progress is a
write that completed or a transport buffer that shrank since the last look, so a slow reader
that keeps reading is never dropped here (merging and the 4000 close handle it).
"""

from __future__ import annotations


class StallWatch:
    """One subscriber's progress, looked at now and then while its writer is busy."""

    __slots__ = ("_buffered", "_since", "_writes", "limit", "timeout")

    def __init__(self, limit: int, timeout: float, now: float) -> None:
        """A watch that starts now.

        Args:
            limit: the outbox limit in bytes (0 = never dropped here).
            timeout: seconds over the limit without progress before it is dropped.
            now: the time (any monotonic clock).
        """
        self.limit = limit
        self.timeout = timeout
        self._since = now  # the last time it made progress or was under the limit
        self._writes = 0
        self._buffered = 0

    def restart(self, now: float, writes: int, buffered: int) -> None:
        """The writer starts again after a rest: count from now."""
        self._since = now
        self._writes = writes
        self._buffered = buffered

    def stalled(self, now: float, *, queued: int, buffered: int, writes: int) -> bool:
        """True when the subscriber should be dropped.

        Args:
            now: the time.
            queued: bytes in its outbox.
            buffered: bytes waiting in its transport.
            writes: how many writes it has completed so far.
        """
        progressed = writes != self._writes or buffered < self._buffered
        self._writes, self._buffered = writes, buffered
        if progressed or not self.limit or queued + buffered <= self.limit:
            self._since = now
            return False
        return now - self._since >= self.timeout
