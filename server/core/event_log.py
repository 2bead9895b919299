"""A room's retained events, for resumes: within a count and a byte budget, oldest go first."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator

from .messages import SequencedEvent
from .room_limits import RoomLimits, event_size


class EventLog:
    """The newest sequenced events of one epoch, consecutive, measured as they come."""

    def __init__(self, limits: RoomLimits) -> None:
        self._limits = limits
        self._events: deque[SequencedEvent] = deque()
        self._bytes = 0

    def __iter__(self) -> Iterator[SequencedEvent]:
        return iter(self._events)

    def first_seq(self, seq: int) -> int:
        """The seq of the oldest event kept; ``seq + 1`` (the next) when none is."""
        return self._events[0].seq if self._events else seq + 1

    def append(self, event: SequencedEvent, turn_bytes: int) -> None:
        """Keep ``event``, then forget what the budgets no longer leave room for."""
        self._events.append(event)
        self._bytes += event_size(event)
        self.trim(turn_bytes)

    def trim(self, turn_bytes: int) -> None:
        """Forget the oldest events past the count, or past the bytes the turns leave.

        ``turn_bytes`` is what the room's ended turns take of the same byte budget; the
        newest event always stays.
        """
        limit, budget = max(1, self._limits.retained_events), self._limits.max_bytes
        while len(self._events) > limit or (
            budget and len(self._events) > 1 and self._bytes + turn_bytes > budget
        ):
            self._bytes -= event_size(self._events.popleft())

    def after(self, since: int, seq: int) -> tuple[SequencedEvent, ...] | None:
        """Every event after ``since`` (the room is at ``seq``), or None when some are gone."""
        if not 0 <= since <= seq:
            return None
        if since == seq:
            return ()
        first = self.first_seq(seq)
        if first > since + 1:
            return None
        return tuple(itertools.islice(self._events, since + 1 - first, None))
