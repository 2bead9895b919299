"""A subscriber: a bounded outbox drained by its own writer task.

The fan-out loop only ever calls ``send``, which never awaits: one stalled reader cannot
hold up the others (never ``await ws.send_*`` in a loop over subscribers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from .core.messages import ServerMessage
from .core.outbox import Outbox

log = logging.getLogger(__name__)

SLOW_CONSUMER = 4000


class FrameSink(Protocol):
    """Where a subscriber's frames go: a WebSocket (or, later, an SSE response)."""

    async def write(self, data: bytes) -> None:
        """Write one encoded frame."""

    async def close(self, code: int, reason: str) -> None:
        """Close the connection with a close code."""


class Subscriber:
    """One connection watching one room."""

    __slots__ = ("_closing", "_sink", "_wake", "outbox", "role")

    def __init__(self, sink: FrameSink, outbox_limit: int, role: str = "publisher") -> None:
        self._sink = sink
        self.outbox = Outbox(outbox_limit)
        self._wake = asyncio.Event()
        self._closing: tuple[int, str] | None = None
        self.role = role

    @property
    def closing(self) -> bool:
        """True once a close was asked for; nothing more is queued."""
        return self._closing is not None

    def send(self, msg: ServerMessage, data: bytes) -> None:
        """Queue one encoded message; a backlog over the limit closes with 4000."""
        if self._closing is not None:
            return
        if not self.outbox.push(msg, data):
            log.info("slow consumer: %d bytes queued, closing with 4000", self.outbox.size)
            self._closing = (SLOW_CONSUMER, "slow consumer: fell too far behind")
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to close the connection after what is queued before now."""
        if self._closing is None:
            self._closing = (code, reason)
            self._wake.set()

    async def run(self) -> None:
        """The writer: drain the outbox into the sink until a close is asked for."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while (data := self.outbox.pop()) is not None:
                    if self._closing is not None and self._closing[0] == SLOW_CONSUMER:
                        break  # a slow consumer resumes instead of reading a stale backlog
                    await self._sink.write(data)
                if self._closing is not None:
                    await self._sink.close(*self._closing)
                    return
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-write; the reader side notices and cleans up.
            log.debug("writer stopped: %s", exc)
