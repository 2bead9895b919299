"""A subscriber's bounded outbox: merge queued deltas when behind, overflow past the limit."""

from __future__ import annotations

from collections import deque

from .codec import encode
from .merge import merge_deltas
from .messages import Delta, ServerMessage


class Outbox:
    """Queued frames of one subscriber, bounded in bytes (0 = unbounded).

    ``push`` never blocks: the fan-out loop calls it for every subscriber and must not wait
    on any of them. Over the limit, runs of consecutive deltas of one turn are merged
    (losslessly); if that is not enough the subscriber has fallen too far behind.
    """

    __slots__ = ("_items", "limit", "merged", "size")

    def __init__(self, limit: int) -> None:
        self._items: deque[tuple[ServerMessage, bytes]] = deque()
        self.limit = limit
        self.size = 0
        self.merged = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, msg: ServerMessage, data: bytes) -> bool:
        """Queue one encoded message; False when the backlog exceeds the limit even merged."""
        self._items.append((msg, data))
        self.size += len(data)
        if self.limit and self.size > self.limit:
            self._compact()
            return self.size <= self.limit
        return True

    def pop(self) -> bytes | None:
        """The next frame to write, or None when empty."""
        if not self._items:
            return None
        _, data = self._items.popleft()
        self.size -= len(data)
        return data

    def _compact(self) -> None:
        items: deque[tuple[ServerMessage, bytes]] = deque()
        run: list[tuple[Delta, bytes]] = []

        def flush() -> None:
            if len(run) == 1:
                items.append(run[0])
            elif run:
                merged = merge_deltas([d for d, _ in run])
                items.append((merged, encode(merged)))
                self.merged += len(run) - 1
            run.clear()

        for msg, data in self._items:
            if isinstance(msg, Delta) and (not run or run[-1][0].turn == msg.turn):
                run.append((msg, data))
                continue
            flush()
            if isinstance(msg, Delta):
                run.append((msg, data))
            else:
                items.append((msg, data))
        flush()
        self._items = items
        self.size = sum(len(d) for _, d in items)
