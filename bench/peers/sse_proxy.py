"""Peer: the per-client SSE proxy of the usual tutorials (aiohttp).

``GET /chat?prompt=...&model=...`` opens its OWN upstream stream and relays every delta as a
server-sent event: N viewers, N upstream requests.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
from aiohttp import web

from .common import TurnFrames, dumps, parse_args, upstream_deltas, wait_for_signal


class ProxyPeer:
    """Relays one upstream stream per request."""

    def __init__(self, session: aiohttp.ClientSession, upstream: str, model: str) -> None:
        self.session = session
        self.upstream = upstream
        self.model = model
        self.turns = itertools.count(1)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """Stream one answer to this client alone."""
        prompt = request.query.get("prompt", "")
        model = request.query.get("model") or self.model
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        frames = TurnFrames(f"t{next(self.turns)}")

        async def event(frame: dict[str, Any]) -> None:
            await resp.write(f"data: {dumps(frame)}\n\n".encode())

        await event(frames.start(prompt, model))
        status = "completed"
        try:
            async for text in upstream_deltas(self.session, self.upstream, model, prompt):
                await event(frames.delta(text))
        except aiohttp.ClientError:
            status = "failed"
        await event(frames.end(status))
        return resp


async def main() -> None:
    """Serve until SIGTERM."""
    args = parse_args(__doc__.split("\n\n")[0])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        peer = ProxyPeer(session, args.upstream_url, args.model)
        app = web.Application()
        app.router.add_get("/chat", peer.chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        try:
            await wait_for_signal()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
