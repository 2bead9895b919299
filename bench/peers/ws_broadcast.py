"""Peer: the ``websockets`` library, one ``broadcast()`` of a pre-encoded frame per delta.

Clients connect to ``ws://HOST:PORT/`` (any path) and get a ``welcome`` frame; a client frame
``{"type": "prompt", "content": ..., "model": ...}`` starts a turn when none streams.
"""

from __future__ import annotations

import asyncio

import aiohttp
from websockets.asyncio.server import ServerConnection, broadcast, serve

from .common import ROOM, TurnFrames, dumps, parse_args, prompt_of, upstream_deltas, wait_for_signal


class BroadcastPeer:
    """One room: the open connections and at most one streaming turn."""

    def __init__(self, session: aiohttp.ClientSession, upstream: str, model: str) -> None:
        self.session = session
        self.upstream = upstream
        self.model = model
        self.clients: set[ServerConnection] = set()
        self.task: asyncio.Task[None] | None = None
        self.turns = 0
        self.seq = 0

    async def handler(self, ws: ServerConnection) -> None:
        """Serve one connection: register it, then read prompts until it closes."""
        self.clients.add(ws)
        try:
            await ws.send(dumps({"type": "welcome", "room": ROOM, "viewers": len(self.clients)}))
            async for message in ws:
                prompt = prompt_of(message)
                if prompt is not None and (self.task is None or self.task.done()):
                    self.task = asyncio.create_task(self.stream(*prompt))
        finally:
            self.clients.discard(ws)

    async def stream(self, content: str, model: str | None) -> None:
        """One upstream request; every delta broadcast as it arrives."""
        self.turns += 1
        frames = TurnFrames(f"t{self.turns}", self.seq)
        model = model or self.model
        broadcast(self.clients, dumps(frames.start(content, model)))
        status = "completed"
        try:
            async for text in upstream_deltas(self.session, self.upstream, model, content):
                broadcast(self.clients, dumps(frames.delta(text)))
        except aiohttp.ClientError:
            status = "failed"
        broadcast(self.clients, dumps(frames.end(status)))
        self.seq = frames.seq


async def main() -> None:
    """Serve until SIGTERM."""
    args = parse_args(__doc__.split("\n\n")[0])
    async with aiohttp.ClientSession() as session:
        peer = BroadcastPeer(session, args.upstream_url, args.model)
        async with serve(peer.handler, args.host, args.port, compression=None):
            await wait_for_signal()


if __name__ == "__main__":
    asyncio.run(main())
