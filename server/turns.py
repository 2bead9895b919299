"""The turn runner: one upstream request per turn, its chunks fed to the core, events out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from .core.errors import UpstreamError
from .core.messages import ErrorInfo, SequencedEvent, TurnEnd
from .core.sse import SSEDecoder, SSEEvent
from .core.types import TurnId
from .hub import Room
from .upstream import StreamBroken, UpstreamClient

log = logging.getLogger(__name__)


class TurnListener(Protocol):
    """Hears a turn's upstream as it happens (the tap relays it to its caller)."""

    def on_sse(self, event: SSEEvent) -> None:
        """One upstream SSE event, before the room applies it."""

    def on_error(self, error: UpstreamError) -> None:
        """The upstream failed before its body (HTTP error, refused, timed out)."""

    def on_end(self) -> None:
        """The turn's runner is done, whatever the outcome."""


class TurnRunner:
    """Streams a turn from the upstream into its room until the turn ends."""

    def __init__(self, upstream: UpstreamClient, system_prompt: str) -> None:
        self.upstream = upstream
        self.system_prompt = system_prompt

    async def run(
        self,
        room: Room,
        turn_id: TurnId,
        model: str,
        options: Mapping[str, object] | None,
        body: dict[str, Any] | None = None,
        listener: TurnListener | None = None,
    ) -> None:
        """Stream ``turn_id``; every outcome ends the turn with exactly one ``turn.end``.

        Args:
            body: the request body as given (tap turns); None builds it from the room.
            listener: told every upstream SSE event and error (the tap's caller).
        """
        state = room.state
        if body is None:
            messages = state.messages_for(turn_id, self.system_prompt)
            body = self.upstream.build_body(messages, model, dict(options) if options else None)
        try:
            await self._stream(room, turn_id, body, listener)
        finally:
            if listener is not None:
                listener.on_end()

    async def _stream(
        self, room: Room, turn_id: TurnId, body: dict[str, Any], listener: TurnListener | None
    ) -> None:
        state = room.state
        config = self.upstream.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.total_timeout
        got_body = False
        try:
            async with asyncio.timeout(None) as timer:
                timer.reschedule(min(loop.time() + config.idle_timeout, deadline))
                async with self.upstream.stream(body) as chunks:
                    decoder = SSEDecoder()
                    async for raw in chunks:
                        got_body = True
                        timer.reschedule(min(loop.time() + config.idle_timeout, deadline))
                        if self._apply(room, turn_id, decoder.feed(raw), listener):
                            await _drain(chunks)
                            return
                    if self._apply(room, turn_id, decoder.close(), listener):
                        return
            self._end(room, state.end_stream(turn_id, time.time()))
        except StreamBroken:
            self._end(room, state.end_stream(turn_id, time.time()))
        except UpstreamError as exc:
            if listener is not None:
                listener.on_error(exc)
            self._end(room, state.fail(turn_id, ErrorInfo(exc.code, exc.message), time.time()))
        except TimeoutError:
            log.info("room %s: turn %s timed out (body started: %s)", state.name, turn_id, got_body)
            self._end(room, state.time_out(turn_id, body_started=got_body, now=time.time()))
        except asyncio.CancelledError:
            # Cancel (already published its turn.end) or shutdown: leaving the stream
            # context above closed the upstream connection.
            self._end(room, state.end_stream(turn_id, time.time()))
            raise
        except Exception:
            log.exception("room %s: turn %s crashed", state.name, turn_id)
            info = ErrorInfo("internal_error", "the server failed while streaming this turn")
            self._end(room, state.fail(turn_id, info, time.time()))

    @staticmethod
    def _apply(
        room: Room, turn_id: TurnId, sse_events: list[SSEEvent], listener: TurnListener | None
    ) -> bool:
        """Feed decoded SSE events to the room; True once the turn has ended."""
        now = time.time()
        for sse in sse_events:
            if listener is not None:
                listener.on_sse(sse)
            events: list[SequencedEvent] = room.state.feed(turn_id, sse, now)
            if events:
                room.publish(events)
                if isinstance(events[-1], TurnEnd):
                    log.info(
                        "room %s: turn %s ended %s", room.state.name, turn_id, events[-1].status
                    )
        return room.state.streaming_turn != turn_id

    @staticmethod
    def _end(room: Room, end: TurnEnd | None) -> None:
        if end is not None:
            log.info("room %s: turn %s ended %s", room.state.name, end.turn, end.status)
            room.publish((end,))


DRAIN_SECONDS = 0.25


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (usually nothing) so the connection can be reused."""
    with contextlib.suppress(TimeoutError, UpstreamError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in chunks:
                pass
