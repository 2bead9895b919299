"""Peer: the raw floor. aiohttp; each delta encoded once, then ``send_frame`` per socket.

Nothing else: no outbox, no task per subscriber. The loop awaits each socket in turn, so a
socket whose buffer is full holds up every socket after it (see the stalled scenario).
Clients connect to ``/ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from .common import ROOM, TurnFrames, dumps, parse_args, prompt_of, upstream_deltas, wait_for_signal


class FloorPeer:
    """One room: the open sockets and at most one streaming turn."""

    def __init__(self, session: aiohttp.ClientSession, upstream: str, model: str) -> None:
        self.session = session
        self.upstream = upstream
        self.model = model
        self.sockets: set[web.WebSocketResponse] = set()
        self.task: asyncio.Task[None] | None = None
        self.turns = 0
        self.seq = 0

    async def handler(self, request: web.Request) -> web.StreamResponse:
        """Serve one WebSocket: register it, then read prompts until it closes."""
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            await ws.send_str(
                dumps({"type": "welcome", "room": ROOM, "viewers": len(self.sockets)})
            )
            async for msg in ws:
                prompt = prompt_of(msg.data) if msg.type == WSMsgType.TEXT else None
                if prompt is not None and (self.task is None or self.task.done()):
                    self.task = asyncio.create_task(self.stream(*prompt))
        finally:
            self.sockets.discard(ws)
        return ws

    async def send(self, frame: dict[str, Any]) -> None:
        """Encode once; one ``send_frame`` per socket."""
        data = dumps(frame).encode()
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_frame(data, WSMsgType.TEXT)

    async def stream(self, content: str, model: str | None) -> None:
        """One upstream request; every delta sent to every socket as it arrives."""
        self.turns += 1
        frames = TurnFrames(f"t{self.turns}", self.seq)
        model = model or self.model
        await self.send(frames.start(content, model))
        status = "completed"
        try:
            async for text in upstream_deltas(self.session, self.upstream, model, content):
                await self.send(frames.delta(text))
        except aiohttp.ClientError:
            status = "failed"
        await self.send(frames.end(status))
        self.seq = frames.seq


async def main() -> None:
    """Serve until SIGTERM."""
    args = parse_args(__doc__.split("\n\n")[0])
    async with aiohttp.ClientSession() as session:
        peer = FloorPeer(session, args.upstream_url, args.model)
        app = web.Application()
        app.router.add_get("/ws", peer.handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        try:
            await wait_for_signal()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
