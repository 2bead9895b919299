"""A test WebSocket viewer that rebuilds every turn from snapshot + deltas and checks seqs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from server.tools.rebuild import Rebuild, TurnText


class Viewer:
    """Connects to a room, records every frame, and rebuilds turns as a client must."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.frames: list[dict[str, Any]] = []
        self.rebuild = Rebuild(keep_text=True)
        self.errors: list[dict[str, Any]] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.close_code: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def turns(self) -> dict[str, TurnText]:
        """The turns rebuilt so far, by id."""
        return self.rebuild.turns

    @property
    def seq(self) -> int:
        """The last seq seen."""
        return self.rebuild.seq

    @property
    def epoch(self) -> str | None:
        """The room's epoch, once welcomed."""
        return self.rebuild.epoch

    @property
    def problems(self) -> list[str]:
        """Gaps, duplicates and wrong epochs seen."""
        return self.rebuild.problems

    async def connect(self, query: str = "") -> Viewer:
        self.ws = await self.session.ws_connect(self.url + query)
        self._task = asyncio.create_task(self._read())
        await self.wait(
            lambda v: (
                any(f["type"] in ("snapshot",) for f in v.frames)
                or any(f["type"] == "welcome" and f["recovered"] for f in v.frames)
            )
        )
        return self

    async def resume(self) -> Viewer:
        """Reconnect with epoch/since of what this viewer has seen."""
        await self.close()
        return await self.connect(self.rebuild.resume_query())

    async def send(self, frame: dict[str, Any] | str) -> None:
        assert self.ws is not None
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            await self._task

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                if self._task is not None and self._task.done() and not predicate(self):
                    raise AssertionError(f"connection ended first; frames: {self.frames[-3:]}")
                await self._changed.wait()

    async def wait_turn_end(self, turn: str | None = None, timeout: float = 10.0) -> TurnText:
        def ended(v: Viewer) -> bool:
            ids = [turn] if turn else list(v.turns)
            return bool(ids) and all(i in v.turns and v.turns[i].end is not None for i in ids)

        await self.wait(ended, timeout)
        return self.turns[turn] if turn else list(self.turns.values())[-1]

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._apply(json.loads(msg.data))
                self._changed.set()
        finally:
            self.close_code = self.ws.close_code
            self._changed.set()

    def _apply(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        self.rebuild.apply(frame)
        if frame["type"] == "error":
            self.errors.append(frame)


SEQUENCED = ("turn.start", "delta", "turn.end")


def sequenced(frames: list[dict[str, Any]], after: int) -> list[dict[str, Any]]:
    """The turn.start, delta and turn.end frames among ``frames`` whose seq is past ``after``."""
    return [f for f in frames if f["type"] in SEQUENCED and f["seq"] > after]


def delta_text(frames: list[dict[str, Any]]) -> str:
    """The content the delta frames among ``frames`` carry, choice by choice, in order."""
    return "".join(
        c.get("content", "") for f in frames if f["type"] == "delta" for c in f["choices"]
    )
