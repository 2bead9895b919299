"""One simulated subscriber of ``fanout loadtest``: connects, rebuilds its room, measures.

Deliberately light, as thousands share one process and one ``ClientSession``: one task per
subscriber, ``json.loads`` per frame, timestamps in flat arrays, texts as digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from array import array
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from server.core.codes import CloseCode
from server.tools.rebuild import SEQUENCED, Rebuild

# Close codes after which PROTOCOL.md says to reconnect (with resume); 1006 is a connection
# that ended without a close frame.
RECONNECT = frozenset(
    {
        CloseCode.GOING_AWAY,
        aiohttp.WSCloseCode.ABNORMAL_CLOSURE,
        CloseCode.INTERNAL_ERROR,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.SLOW_CONSUMER,
    }
)
RETRY_SECONDS = (0.05, 0.2, 0.5, 1.0, 2.0)
WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=3.0)


@dataclass
class RoomRun:
    """What the subscribers of one room share with the prompt driver."""

    name: str
    ws_url: str
    ends: dict[str, asyncio.Event] = field(default_factory=dict)
    posted: dict[str, float] = field(default_factory=dict)  # turn -> loop time of its POST

    def ended(self, turn: str) -> asyncio.Event:
        """Set once any subscriber saw ``turn.end`` of ``turn``."""
        event = self.ends.get(turn)
        if event is None:
            event = self.ends[turn] = asyncio.Event()
        return event


@dataclass
class Counters:
    """Totals over every subscriber, for the progress bar."""

    connected: int = 0
    frames: int = 0
    closes_4000: int = 0
    dropped: int = 0


class LoadSubscriber:
    """One subscriber: its connection loop, what it rebuilt and what it measured."""

    def __init__(
        self,
        index: int,
        room: RoomRun,
        counters: Counters,
        *,
        slow_stall: float = 0.0,
    ) -> None:
        self.index = index
        self.room = room
        self.slow = slow_stall > 0
        self._stall = slow_stall
        self._counters = counters
        self.rebuild = Rebuild()
        self.connect_ms: float | None = None  # the first connection, to its welcome
        self.errors: list[str] = []
        self.closes: dict[int, int] = {}
        self.reconnects = 0
        # One entry per sequenced frame: its seq and when it was read (loop time).
        self.seqs = array("q")
        self.times = array("d")
        self.merged: list[tuple[int, int, float]] = []  # (first_seq, seq, time) when merged
        self.first_delta: dict[str, float] = {}  # turn -> loop time of its first delta
        self.gaps = array("d")  # seconds between consecutive deltas of a turn
        self._last_delta: tuple[str, float] | None = None
        self.gave_up = False  # closed with a code that says not to reconnect
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = False

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Connect, read until stopped; reconnect with resume when the protocol says so."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stopping:
            started = loop.time()
            try:
                ws = await session.ws_connect(
                    self.room.ws_url + self.rebuild.resume_query(),
                    autoclose=False,  # keep the server's close code (see _read)
                    max_msg_size=0,
                    timeout=WS_TIMEOUT,
                )
            except (aiohttp.ClientError, OSError) as exc:
                self.errors.append(f"connect: {exc!r:.200}")
                if self._stopping:
                    return
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                attempt += 1
                continue
            if self._stopping:
                await ws.close()
                return
            self._ws = ws
            try:
                code = await self._read(ws, started)
            finally:
                self._ws = None
                if not ws.closed:
                    await ws.close()
            if self._stopping:
                return
            self.closes[code] = self.closes.get(code, 0) + 1
            if code == CloseCode.SLOW_CONSUMER:
                self._counters.closes_4000 += 1
            elif code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
                self._counters.dropped += 1
            if code not in RECONNECT:
                self.errors.append(f"closed by the server with {code}")
                self.gave_up = True
                return
            self.reconnects += 1
            attempt = 0

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, started: float) -> int:
        """Read one connection's frames; returns the close code (1006 when dropped)."""
        loop = asyncio.get_running_loop()
        loads = json.loads
        rebuild = self.rebuild
        counters = self._counters
        while True:
            try:
                msg = await ws.receive()
            except (aiohttp.ClientError, OSError):
                return 1006
            if msg.type is not aiohttp.WSMsgType.TEXT:
                # With autoclose off, a CLOSE frame comes back as a message carrying its code;
                # aiohttp's own close reply would fail once the server has hung up after its
                # close frame, and it would then report 1006 instead of that code.
                return int(msg.data) if msg.type is aiohttp.WSMsgType.CLOSE else 1006
            now = loop.time()
            frame = loads(msg.data)
            kind = frame["type"]
            if kind in SEQUENCED:
                counters.frames += 1
                rebuild.event(frame)
                self.seqs.append(frame["seq"])
                self.times.append(now)
                if kind == "delta":
                    await self._delta(frame, now)
                elif kind == "turn.end":
                    self.room.ended(frame["turn"]).set()
                    self._last_delta = None
            elif kind == "welcome":
                rebuild.welcome(frame)
                if self.connect_ms is None:
                    self.connect_ms = (now - started) * 1000
                    counters.connected += 1
            elif kind == "snapshot":
                rebuild.snapshot(frame)

    async def _delta(self, frame: dict[str, Any], now: float) -> None:
        turn = frame["turn"]
        first = frame.get("first_seq")
        if first is not None:
            self.merged.append((first, frame["seq"], now))
        if turn not in self.first_delta:
            self.first_delta[turn] = now
        elif self._last_delta is not None and self._last_delta[0] == turn:
            self.gaps.append(now - self._last_delta[1])
        self._last_delta = (turn, now)
        if self._stall:
            stall, self._stall = self._stall, 0.0
            await asyncio.sleep(stall)  # a reader that stops reading, once

    async def stop(self) -> None:
        """Stop: close the connection (code 1000) and do not reconnect."""
        self._stopping = True
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await ws.close()
