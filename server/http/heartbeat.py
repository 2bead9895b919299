"""The instance's WebSocket heartbeat: one task pings every connection in turn.

The rules (when to ping, when to give up) are ``core.heartbeat``'s; this driver ticks the
wheel and carries out its answers. With ``server.heartbeat_seconds = 0`` nothing is watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from server.core.clock import Alarms
from server.core.heartbeat import HeartbeatWheel, Pulse, tick_seconds

log = logging.getLogger(__name__)


class Beating(Pulse):
    """A connection the heartbeat can ping and drop (``ws.WebSocketSink``)."""

    __slots__ = ()

    def ping(self) -> None:
        """Send a ping."""
        raise NotImplementedError

    def drop(self) -> None:
        """Drop the connection: it answered nothing in time."""
        raise NotImplementedError


class Heartbeat:
    """Pings connections that have been silent for ``seconds``; drops those that stay so."""

    def __init__(self, seconds: float, alarms: Alarms | None = None) -> None:
        """A heartbeat with a ping interval of ``seconds`` (0 = off).

        Its ticks are timed by ``alarms`` (by default the running event loop; a test's
        ``ManualClock``).
        """
        self.seconds = seconds
        self.alarms = alarms
        self.wheel: HeartbeatWheel[Beating] = HeartbeatWheel()

    def add(self, conn: Beating) -> None:
        """Watch ``conn`` (nothing when the heartbeat is off)."""
        if self.seconds:
            self.wheel.add(conn)

    def discard(self, conn: Beating) -> None:
        """Stop watching ``conn`` (idempotent)."""
        self.wheel.discard(conn)

    def tick(self) -> None:
        """Visit the next set of connections: ping the silent ones, drop the unanswering."""
        ping, drop = self.wheel.tick()
        for conn in ping:
            conn.ping()
        for conn in drop:
            log.info("no answer to a ping: dropping the connection")
            conn.drop()

    async def run(self) -> None:
        """Tick forever: every connection is visited once per half interval."""
        loop = asyncio.get_running_loop()
        alarms: Alarms = self.alarms or loop
        every = tick_seconds(self.seconds)
        while True:
            # What asyncio.sleep does, with the timer taken from ``alarms``.
            woken: asyncio.Future[None] = loop.create_future()
            alarm = alarms.call_later(every, functools.partial(_wake, woken))
            try:
                await woken
            finally:
                alarm.cancel()
            self.tick()

    async def context(self) -> AsyncIterator[None]:
        """Run while the application runs (an aiohttp ``cleanup_ctx`` body)."""
        if not self.seconds:
            yield
            return
        task = asyncio.create_task(self.run(), name="heartbeat")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _wake(woken: asyncio.Future[None]) -> None:
    """Resolve ``woken`` unless the sleeper was cancelled meanwhile."""
    if not woken.done():
        woken.set_result(None)
