"""A test EventSource-style viewer: reads GET /api/rooms/{room}/events with aiohttp."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from server.core.sse import SSEDecoder

from .viewer import Viewer


class SSEViewer(Viewer):
    """Rebuilds turns like Viewer, from Server-Sent Events, and records every event id."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        super().__init__(session, url)
        self.last_event_id: str | None = None
        self.ids: list[str | None] = []
        self.names: list[str | None] = []
        self.comments = 0
        self.headers: dict[str, str] = {}
        self._response: aiohttp.ClientResponse | None = None

    async def connect(self, query: str = "", last_event_id: str | None = None) -> SSEViewer:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self._response = await self.session.get(self.url + query, headers=headers)
        self.headers = dict(self._response.headers)
        self._task = asyncio.create_task(self._read())
        await self.wait(
            lambda v: (
                any(f["type"] == "snapshot" for f in v.frames)
                or any(f["type"] == "welcome" and f["recovered"] for f in v.frames)
            )
        )
        return self

    async def resume(self) -> SSEViewer:
        """Reconnect with Last-Event-ID, as EventSource does."""
        await self.close()
        return await self.connect(last_event_id=self.last_event_id)

    async def close(self) -> None:
        if self._response is not None:
            self._response.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        assert self._response is not None
        decoder = SSEDecoder()
        try:
            async for raw in self._response.content.iter_any():
                self.comments += raw.count(b"\n:") + raw.startswith(b":")
                for event in decoder.feed(raw):
                    self._take(event.event, event.data, event.id)
                self._changed.set()
        except (aiohttp.ClientError, asyncio.CancelledError):
            pass
        finally:
            self._changed.set()

    def _take(self, name: str | None, data: str, event_id: str | None) -> None:
        frame: dict[str, Any] = json.loads(data)
        self.names.append(name)
        self.ids.append(event_id)
        if event_id is not None:
            self.last_event_id = event_id
        self._apply(frame)
