"""Peer: python-socketio (AsyncServer on aiohttp), one room, ``emit(..., room=)`` per delta.

Clients connect to ``/socket.io/`` and are put in the room on connect; a ``prompt`` event
``{"content": ..., "model": ...}`` starts a turn when none streams. Each frame is emitted as
an event named after its type, with the frame as its argument.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import socketio  # type: ignore[import-untyped]
from aiohttp import web

from .common import ROOM, TurnFrames, parse_args, upstream_deltas, wait_for_signal


class RoomsPeer:
    """One socket.io room and at most one streaming turn."""

    def __init__(self, session: aiohttp.ClientSession, upstream: str, model: str) -> None:
        self.session = session
        self.upstream = upstream
        self.model = model
        self.sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
        self.sio.on("connect", self.connect)
        self.sio.on("prompt", self.prompt)
        self.task: asyncio.Task[None] | None = None
        self.turns = 0
        self.seq = 0

    async def connect(self, sid: str, _environ: dict[str, Any], _auth: Any = None) -> None:
        """Put every new client in the room."""
        await self.sio.enter_room(sid, ROOM)

    async def prompt(self, _sid: str, data: Any) -> None:
        """Start a turn unless one streams."""
        if self.task is None or self.task.done():
            data = data if isinstance(data, dict) else {}
            content = str(data.get("content", ""))
            self.task = asyncio.create_task(self.stream(content, data.get("model")))

    async def stream(self, content: str, model: str | None) -> None:
        """One upstream request; every delta emitted to the room as it arrives."""
        self.turns += 1
        frames = TurnFrames(f"t{self.turns}", self.seq)
        model = model or self.model
        await self.sio.emit("turn.start", frames.start(content, model), room=ROOM)
        status = "completed"
        try:
            async for text in upstream_deltas(self.session, self.upstream, model, content):
                await self.sio.emit("delta", frames.delta(text), room=ROOM)
        except aiohttp.ClientError:
            status = "failed"
        await self.sio.emit("turn.end", frames.end(status), room=ROOM)
        self.seq = frames.seq


async def main() -> None:
    """Serve until SIGTERM."""
    args = parse_args(__doc__.split("\n\n")[0])
    async with aiohttp.ClientSession() as session:
        peer = RoomsPeer(session, args.upstream_url, args.model)
        app = web.Application()
        peer.sio.attach(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        try:
            await wait_for_signal()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
