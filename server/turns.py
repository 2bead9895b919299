"""The turn runner: one upstream request per turn, its chunks fed to the core, events out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from .core.errors import UpstreamError
from .core.messages import ErrorInfo, SequencedEvent, TurnEnd
from .core.sse import SSEDecoder, SSEEvent
from .core.types import TurnId
from .hub import Room
from .upstream import StreamBroken, UpstreamClient

log = logging.getLogger(__name__)


class TurnRunner:
    """Streams a turn from the upstream into its room until the turn ends."""

    def __init__(self, upstream: UpstreamClient, system_prompt: str) -> None:
        self.upstream = upstream
        self.system_prompt = system_prompt

    async def run(
        self, room: Room, turn_id: TurnId, model: str, options: Mapping[str, object] | None
    ) -> None:
        """Stream ``turn_id``; every outcome ends the turn with exactly one ``turn.end``."""
        state = room.state
        messages = state.messages_for(turn_id, self.system_prompt)
        body = self.upstream.build_body(messages, model, dict(options) if options else None)
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
                        if self._apply(room, turn_id, decoder.feed(raw)):
                            return
                    if self._apply(room, turn_id, decoder.close()):
                        return
            self._end(room, state.end_stream(turn_id, time.time()))
        except StreamBroken:
            self._end(room, state.end_stream(turn_id, time.time()))
        except UpstreamError as exc:
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
    def _apply(room: Room, turn_id: TurnId, sse_events: list[SSEEvent]) -> bool:
        """Feed decoded SSE events to the room; True once the turn has ended."""
        now = time.time()
        for sse in sse_events:
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
