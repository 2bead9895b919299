"""The turn runner: one upstream request per turn, its chunks fed to the core, events out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from server.core.codes import ErrorCode
from server.core.errors import UPSTREAM_TIMEOUT_MESSAGE, UpstreamError
from server.core.messages import (
    ErrorInfo,
    ResponsePosition,
    SequencedEvent,
    TurnEnd,
    temporary_error,
)
from server.core.retry import RetryPolicy, is_temporary, retry_delay
from server.core.sse import LineTooLong, SSEDecoder, SSEEvent
from server.core.types import RoomName, TurnId, UpstreamApi
from server.rooms.room import Room, TurnLost
from server.rooms.turn_writes import TurnWrites
from server.upstream.client import StreamBroken, UpstreamClient, UpstreamStatusError

log = logging.getLogger(__name__)

# Opens one upstream request (each attempt calls it again): its raw body bytes.
Opener = Callable[[], AbstractAsyncContextManager[AsyncIterator[bytes]]]


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

    def __init__(
        self,
        upstream: UpstreamClient,
        system_prompt: str,
        writes: TurnWrites,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.upstream = upstream
        self.writes = writes
        self.system_prompt = system_prompt
        self.policy = policy or RetryPolicy(max_retries=upstream.config.max_retries)

    async def run(
        self,
        room: Room,
        turn_id: TurnId,
        model: str,
        options: Mapping[str, object] | None,
        body: dict[str, Any] | None = None,
        listener: TurnListener | None = None,
        api: UpstreamApi = "chat",
    ) -> None:
        """Stream ``turn_id``; every outcome ends the turn with exactly one ``turn.end``.

        Args:
            room: the room the turn streams in.
            turn_id: the turn, already started in the room.
            model: the model asked for, when the body is built from the room.
            options: the prompt's request options, when the body is built from the room.
            body: the request body as given (tap turns); None builds it from the room.
            listener: told every upstream SSE event and error (the tap's caller).
            api: the API the upstream is called with (the room's turn reads its events).
        """
        state = room.state
        if body is None:
            messages = state.messages_for(turn_id, self.system_prompt)
            body = self.upstream.build_body(messages, model, dict(options) if options else None)
        try:
            await self._stream(room, turn_id, lambda: self.upstream.stream(body, api), listener)
        finally:
            if listener is not None:
                listener.on_end()

    async def resume(self, room: Room, turn_id: TurnId, position: ResponsePosition) -> None:
        """Go on with a turn another instance produced, from its upstream position.

        The background response is streamed again after the last event that instance stored
        (``starting_after``); when it cannot be (gone, too old to stream) the turn ends
        ``truncated``, its text kept.
        """

        def reattach() -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
            return self.upstream.reattach(position.response_id, position.after)

        await self._stream(room, turn_id, reattach, None, resuming=True)

    async def cancel_response(self, room: RoomName, response_id: str) -> None:
        """Cancel a background response upstream (its turn was cancelled)."""
        if await self.upstream.cancel_response(response_id):
            log.info("room %s: upstream response cancelled", room)

    async def _stream(
        self,
        room: Room,
        turn_id: TurnId,
        open_: Opener,
        listener: TurnListener | None,
        *,
        resuming: bool = False,
    ) -> None:
        """Attempt the request, again while it fails before its body and the policy allows.

        A request that fails for good fails the turn, unless ``resuming``: then the turn ends
        as a broken stream does (``truncated``).
        """
        state = room.state
        deadline = asyncio.get_running_loop().time() + self.upstream.config.total_timeout
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    await self._attempt(room, turn_id, open_, listener, deadline)
                    return
                except UpstreamError as exc:
                    delay = retry_delay(
                        self.policy, attempt, exc.status, exc.code, exc.retry_after_ms
                    )
                    if delay is None and resuming:
                        log.warning(
                            "room %s: turn %s: re-attaching failed (%s); ending it",
                            state.name,
                            turn_id,
                            exc.code,
                        )
                        await self._end(room, room.state.end_stream(turn_id, time.time()))
                        return
                    if delay is None:
                        await self._fail(room, turn_id, exc, listener)
                        return
                    log.info(
                        "room %s: turn %s: upstream %s (%s), attempt %d again in %.2fs",
                        state.name,
                        turn_id,
                        exc.status,
                        exc.code,
                        attempt + 1,
                        delay,
                    )
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            # Cancel (already published its turn.end) or shutdown: leaving the stream
            # context closed the upstream connection.
            with contextlib.suppress(TurnLost):
                await self._end(room, room.state.end_stream(turn_id, time.time()))
            raise
        except TurnLost as exc:
            log.warning("room %s: turn %s stopped here: %s", state.name, turn_id, exc)
        except Exception:
            log.exception("room %s: turn %s crashed", state.name, turn_id)
            info = ErrorInfo(
                ErrorCode.INTERNAL_ERROR, "the server failed while streaming this turn"
            )
            with contextlib.suppress(TurnLost):
                await self._end(room, room.state.fail(turn_id, info, time.time()))

    async def _attempt(
        self,
        room: Room,
        turn_id: TurnId,
        open_: Opener,
        listener: TurnListener | None,
        deadline: float,
    ) -> None:
        """One upstream request; raises UpstreamError when it fails before its body."""
        state = room.state
        idle = self.upstream.config.idle_timeout
        loop = asyncio.get_running_loop()
        got_body = False
        started, seq0, timed = loop.time(), state.seq, False
        reported = False  # the attempt's repairs: counted and logged once, as its turn ends
        if room.metrics is not None:
            room.metrics.upstream_requests.inc()
        try:
            async with asyncio.timeout(None) as timer:
                timer.reschedule(min(loop.time() + idle, deadline))
                async with open_() as chunks:
                    decoder = SSEDecoder(self.upstream.config.max_line_bytes)
                    async for raw in chunks:
                        got_body = True
                        timer.reschedule(min(loop.time() + idle, deadline))
                        if await self._apply(room, turn_id, decoder.feed(raw), listener):
                            reported = _report_repairs(room, turn_id)
                            await _drain(chunks)
                            return
                        if not timed and state.seq > seq0 and room.metrics is not None:
                            timed = True  # the first delta of this attempt
                            room.metrics.ttft.observe(loop.time() - started)
                    if await self._apply(room, turn_id, decoder.close(), listener):
                        return
            reported = _report_repairs(room, turn_id)
            await self._end(room, room.state.end_stream(turn_id, time.time()))
        except StreamBroken:
            reported = _report_repairs(room, turn_id)
            await self._end(room, room.state.end_stream(turn_id, time.time()))
        except LineTooLong as exc:
            # Leaving the stream's context closed the connection mid-body; never retried.
            log.warning("room %s: turn %s: %s", state.name, turn_id, exc.message)
            if not await self._apply(room, turn_id, exc.events, listener):
                reported = _report_repairs(room, turn_id)
                info = ErrorInfo(exc.code, exc.message)
                await self._end(room, room.state.fail(turn_id, info, time.time()))
        except TimeoutError as exc:
            log.info("room %s: turn %s timed out (body started: %s)", state.name, turn_id, got_body)
            if not got_body:
                raise UpstreamError(ErrorCode.UPSTREAM_TIMEOUT, UPSTREAM_TIMEOUT_MESSAGE) from exc
            reported = _report_repairs(room, turn_id)
            await self._end(room, room.state.time_out(turn_id, body_started=True, now=time.time()))
        except UpstreamStatusError as exc:
            reported = _report_repairs(room, turn_id, exc.repairs)  # before _stream fails the turn
            raise
        finally:
            if not reported:
                _report_repairs(room, turn_id)

    async def _fail(
        self, room: Room, turn_id: TurnId, exc: UpstreamError, listener: TurnListener | None
    ) -> None:
        if listener is not None:
            listener.on_error(exc)
        info = (
            temporary_error(exc.code, exc.message, exc.retry_after_ms)
            if is_temporary(exc.status, exc.code)
            else ErrorInfo(exc.code, exc.message)
        )
        await self._end(room, room.state.fail(turn_id, info, time.time()))

    async def _apply(
        self, room: Room, turn_id: TurnId, sse_events: list[SSEEvent], listener: TurnListener | None
    ) -> bool:
        """Feed decoded SSE events to the room; True once the turn has ended."""
        # Everything one read brought goes out as one delta: see RoomState.feed_many. The
        # tap's caller is given the events the turn took, up to the one that ended it.
        relay = listener.on_sse if listener is not None else None
        events: list[SequencedEvent] = room.state.feed_many(turn_id, sse_events, time.time(), relay)
        if events:
            await self.writes.commit(room, events)
            if isinstance(events[-1], TurnEnd):
                log.info("room %s: turn %s ended %s", room.state.name, turn_id, events[-1].status)
        return room.state.streaming_turn != turn_id

    async def _end(self, room: Room, end: TurnEnd | None) -> None:
        if end is not None:
            log.info("room %s: turn %s ended %s", room.state.name, end.turn, end.status)
            await self.writes.commit(room, (end,))


def _report_repairs(room: Room, turn_id: TurnId, error_body: int = 0) -> bool:
    """Count the values of a turn's upstream that were repaired, and say so in one log line.

    Args:
        room: the room the turn streams in.
        turn_id: the turn whose upstream values were repaired.
        error_body: repairs of an HTTP error body, beside those of the turn's chunks.

    Returns:
        True: the caller reports nothing more for this attempt.
    """
    skipped = room.state.turns.skipped(turn_id)
    if skipped:
        log.debug(
            "room %s: turn %s: %d upstream event(s) of an unknown type or shape skipped",
            room.state.name,
            turn_id,
            skipped,
        )
    repairs = error_body + room.state.turns.repairs(turn_id)
    if not repairs:
        return True
    if room.metrics is not None:
        room.metrics.upstream_repairs.inc(repairs)
    log.warning(
        "room %s: turn %s: the upstream sent %d value(s) that are not valid text or numbers "
        "(lone surrogates became U+FFFD, non-finite numbers were dropped)",
        room.state.name,
        turn_id,
        repairs,
    )
    return True


DRAIN_SECONDS = 0.25


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (usually nothing) so the connection can be reused."""
    with contextlib.suppress(TimeoutError, UpstreamError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in chunks:
                pass
