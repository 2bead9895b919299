"""The Responses the mock keeps for ``GET /v1/responses/{id}``, bounded in count and age.

A ``StoredResponse`` holds its ``ResponseEvents`` (so a retrieval sees the ``Response`` as
it stands); a background one also keeps every event frame it produced, indexed by sequence
number, so that a stream can be replayed from any point and then followed live, and the
task that produces them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator

from server.tools.mock_response_events import ResponseEvents


class StoredResponse:
    """One stored response: its events builder and, in background mode, its event log."""

    def __init__(self, events: ResponseEvents, background: bool, now: float) -> None:
        self.events = events
        self.background = background
        self.task: asyncio.Task[None] | None = None
        self._frames: list[bytes] = []
        self._ended = False
        self._since = now
        # Replaced on every change: a follower waits on the one it saw, and is woken once.
        self._changed = asyncio.Event()

    @property
    def ended(self) -> bool:
        """True once no more events will come (the end, a cancel, or the producer stopped)."""
        return self._ended

    def expired(self, now: float, seconds: float) -> bool:
        """True for a response that ended more than ``seconds`` before ``now``."""
        return self._ended and now - self._since > seconds

    def append(self, frames: list[bytes]) -> None:
        """Keep frames the producer built (one per event, in sequence order)."""
        self._frames.extend(frames)
        self._wake()

    def end(self, now: float) -> None:
        """No more events: followers drain what is kept, then stop."""
        if not self._ended:
            self._ended = True
            self._since = now
            self._wake()

    def cancel(self, now: float) -> None:
        """Stop the producer and mark the response cancelled."""
        self.events.cancel()
        if self.task is not None:
            self.task.cancel()
        self.end(now)

    async def follow(self, after: int) -> AsyncGenerator[list[bytes], None]:
        """The kept frames with a sequence number above ``after``, then the live ones."""
        index = after + 1
        while True:
            if index < len(self._frames):
                batch = self._frames[index:]
                index = len(self._frames)
                yield batch
            elif self._ended:
                return
            else:
                await self._changed.wait()

    def _wake(self) -> None:
        """Wake the followers waiting for a change."""
        self._changed.set()
        self._changed = asyncio.Event()


class ResponseStore:
    """Stored responses by id: at most ``limit``, and ended ones for ``seconds`` at most."""

    def __init__(self, limit: int, seconds: float) -> None:
        self._limit = limit
        self._seconds = seconds
        self._responses: OrderedDict[str, StoredResponse] = OrderedDict()

    def add(self, stored: StoredResponse, now: float) -> None:
        """Keep ``stored``, dropping the oldest beyond the limit (their producers stop)."""
        self._prune(now)
        self._responses[stored.events.id] = stored
        while len(self._responses) > self._limit:
            _, oldest = self._responses.popitem(last=False)
            if oldest.task is not None:
                oldest.task.cancel()
            oldest.end(now)

    def get(self, response_id: str, now: float) -> StoredResponse | None:
        """The stored response with this id, if it is still kept."""
        self._prune(now)
        return self._responses.get(response_id)

    async def close(self) -> None:
        """Stop every producer and end every stream (the mock is shutting down)."""
        tasks = [s.task for s in self._responses.values() if s.task is not None]
        for stored in self._responses.values():
            if stored.task is not None:
                stored.task.cancel()
            stored.end(0.0)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _prune(self, now: float) -> None:
        """Forget the responses that ended too long ago."""
        for response_id in [k for k, s in self._responses.items() if s.expired(now, self._seconds)]:
            del self._responses[response_id]
