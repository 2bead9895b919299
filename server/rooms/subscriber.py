"""A subscriber: a bounded outbox, drained by a writer task while it holds anything.

The fan-out loop only ever calls ``send``, which never awaits: one stalled reader cannot hold
up the others (never ``await ws.send_*`` in a loop over subscribers). A subscriber that keeps
up (nothing queued, nothing waiting in its transport) has the shared encoding written at once,
with no queue entry and no task switch; the others queue, and a writer task is started to
drain the queue. It ends when the queue is empty, so a subscriber that keeps up (most of them,
most of the time) holds no task at all. The rules (the bypass, merging, the limit, coalescing)
are ``core.outbox``'s; this driver tells it how many bytes wait in the transport and carries
out its answers.

A close that the peer does not let through in time (a stalled reader: the writer is parked on
the transport's drain, and the close frame queues behind megabytes) is cut short: the
transport is aborted, which drops its buffer and wakes the parked writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from server.config import LimitsConfig
from server.core.codes import CloseCode
from server.core.messages import ServerMessage
from server.core.outbox import Outbox
from server.core.stall import StallWatch

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_SECONDS = 2.0


class FrameSink(Protocol):
    """Where a subscriber's frames go: a WebSocket or an SSE response."""

    async def write(self, data: bytes) -> None:
        """Write one encoded frame."""

    async def close(self, code: CloseCode, reason: str) -> None:
        """Close the connection with a close code."""


class Subscriber:
    """One connection watching one room."""

    __slots__ = (
        "_close_timeout",
        "_closing",
        "_coalesce",
        "_ended",
        "_ended_waiter",
        "_looking",
        "_sink",
        "_stall",
        "_transport",
        "_write_now",
        "_writer",
        "_writes",
        "outbox",
        "pos",
    )

    def __init__(
        self,
        sink: FrameSink,
        outbox_limit: int,
        *,
        transport: asyncio.Transport | None = None,
        write_now: Callable[[bytes], None] | None = None,
        coalesce_seconds: float = 0.0,
        close_timeout: float = CLOSE_TIMEOUT_SECONDS,
    ) -> None:
        """A subscriber; ``start`` sends what it was given on joining.

        Args:
            sink: where frames go.
            outbox_limit: the backlog in bytes past which it is closed with 4000 (0 = none).
            transport: the connection's transport: its write buffer counts in the backlog, and
                it is aborted when a close does not get through in ``close_timeout`` seconds.
            write_now: writes a frame straight to the transport, for frames that may skip
                the queue (a subscriber that keeps up); None queues every frame.
            coalesce_seconds: how long a writer that wakes to a delta waits for more (0 = off).
            close_timeout: seconds a close may take before the transport is aborted.
        """
        self._sink = sink
        self._transport = transport
        # A coalescing window needs frames to wait in the queue, so it turns the bypass off.
        self._write_now = None if coalesce_seconds else write_now
        self.outbox = Outbox(outbox_limit, joining=True)  # until start()
        self._writer: asyncio.Task[None] | None = None
        self._ended = False  # the close was carried out, or a write failed
        self._ended_waiter: asyncio.Future[None] | None = None  # only while one waits
        self._closing: tuple[CloseCode, str] | None = None
        self._coalesce = coalesce_seconds
        self._close_timeout = close_timeout
        self.pos = 0  # how much of its room's pending events it was given (``ring``)
        self._writes = 0  # writes completed (progress, for the stall watch)
        self._stall: StallWatch | None = None  # made when its writer first starts
        self._looking: asyncio.TimerHandle | None = None  # the watch's next look

    @property
    def closing(self) -> bool:
        """True once a close was asked for; nothing more is queued."""
        return self._closing is not None

    @property
    def close_code(self) -> CloseCode | None:
        """The close code asked for, if any."""
        return None if self._closing is None else self._closing[0]

    def send(self, msg: ServerMessage, data: bytes) -> None:
        """Write one encoded message now, or queue it; a backlog over the limit closes with 4000."""
        if self._closing is not None:
            return
        outbox = self.outbox
        transport = self._transport
        in_flight = 0 if transport is None else transport.get_write_buffer_size()
        if self._write_now is not None and outbox.bypass(in_flight):
            self._write_now(data)  # no queue entry, no task switch: the hot path
            return
        if not outbox.push(msg, data, in_flight):
            log.info(
                "slow consumer: %d bytes queued, %d in flight; closing with 4000",
                outbox.size,
                in_flight,
            )
            outbox.clear()  # stale once it resumes; the memory goes now, not at the close
            self._request_close(CloseCode.SLOW_CONSUMER, "slow consumer: fell too far behind")
            return
        self._wake()

    def start(self) -> None:
        """The join burst (welcome, then the snapshot or the replay) is queued: send it."""
        self.outbox.joined()
        self._wake()

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the writer to close the connection after what is queued before now."""
        if self._closing is None:
            self._request_close(code, reason)

    def _request_close(self, code: CloseCode, reason: str) -> None:
        self._closing = (code, reason)
        if self._transport is not None:
            # Aborting a connection that closed in time does nothing; one that did not (its
            # close frame stuck behind a backed-up socket) is dropped with its buffer, which
            # also wakes a writer parked on the transport's drain.
            asyncio.get_running_loop().call_later(self._close_timeout, self._transport.abort)
        self._wake()

    def _wake(self) -> None:
        """Start a writer, unless one runs or the join burst is still being queued.

        A running writer sees what was queued; while the join burst is being queued, ``start``
        wakes the writer once it is.
        """
        if self._writer is None and not self.outbox.joining and not self._ended:
            self._writer = asyncio.create_task(self._write(), name="subscriber-writer")
            if self._looking is None and self._transport is not None and self.outbox.limit:
                self._watch()

    def _watch(self) -> None:
        """Look at the writer's progress a few times per close timeout.

        Only while it is busy or its transport holds more than the limit (a WebSocket write
        returns before its bytes are sent).
        """
        loop = asyncio.get_running_loop()
        transport = self._transport
        assert transport is not None
        buffered = transport.get_write_buffer_size()
        if self._stall is None:
            self._stall = StallWatch(self.outbox.limit, self._close_timeout, loop.time())
        self._stall.restart(loop.time(), self._writes, buffered)
        self._looking = loop.call_later(self._close_timeout / 4, self._look)

    def _look(self) -> None:
        """The stall watch's look: drop a subscriber that stopped reading past the limit."""
        self._looking = None
        transport, stall = self._transport, self._stall
        if self._ended or transport is None or stall is None:
            return
        buffered = transport.get_write_buffer_size()
        if self._writer is None and buffered <= self.outbox.limit:
            return  # nothing much waits on this reader: its next writer watches again
        loop = asyncio.get_running_loop()
        if stall.stalled(
            loop.time(), queued=self.outbox.size, buffered=buffered, writes=self._writes
        ):
            log.info(
                "subscriber stopped reading: %d bytes queued, %d in flight for %.1f s; dropped",
                self.outbox.size,
                buffered,
                self._close_timeout,
            )
            self.outbox.clear()
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: stopped reading")
            transport.abort()  # nothing gets through a reader that stopped: not even a close
            return
        self._looking = loop.call_later(self._close_timeout / 4, self._look)

    async def _write(self) -> None:
        """The writer: drain the outbox into the sink; close when a close is asked for."""
        outbox = self.outbox
        try:
            while self._closing is None:
                if not outbox:
                    return  # drained: the next frame that must queue starts a new writer
                if self._coalesce and outbox.coalescible():
                    outbox.coalescing = True
                    try:
                        await asyncio.sleep(self._coalesce)
                    finally:
                        outbox.coalescing = False
                while (data := outbox.pop()) is not None:
                    await self._sink.write(data)
                    self._writes += 1
            # What was queued before the close goes first (an error frame before 4502);
            # after an overflow the outbox is already empty.
            while (data := outbox.pop()) is not None:
                await self._sink.write(data)
            await self._sink.close(*self._closing)
            self._end()
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-write; the reader side notices and cleans up.
            log.debug("writer stopped: %s", exc)
            self._end()
        except Exception:
            # A fault while serving this one subscriber closes it alone (1011); the room and
            # its other subscribers go on.
            log.exception("subscriber writer failed; closing 1011")
            self.outbox.clear()
            self._closing = self._closing or (CloseCode.INTERNAL_ERROR, "internal error")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sink.close(*self._closing), self._close_timeout)
            if self._transport is not None:
                self._transport.abort()
            self._end()
        finally:
            self._writer = None

    def fail(self) -> None:
        """Close this subscriber alone after a fault while serving it (1011)."""
        self.outbox.clear()
        self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _end(self) -> None:
        self._ended = True
        waiter = self._ended_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_ended(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: no limit) for the connection to end.

        Its close carried out, or a write that failed. True once it has.
        """
        if not self._ended:
            if self._ended_waiter is None:
                self._ended_waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._ended_waiter), timeout)
        return self._ended

    async def stop(self, grace: float) -> None:
        """The connection is going.

        Let a close that was asked for go out (up to ``grace`` seconds), then stop the writer.
        """
        if self._looking is not None:
            self._looking.cancel()
            self._looking = None
        if grace > 0 and self._closing is not None and self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), grace)
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer


def connection_subscriber(
    sink: FrameSink,
    limits: LimitsConfig,
    transport: asyncio.Transport | None,
    write_now: Callable[[bytes], None] | None = None,
) -> Subscriber:
    """A subscriber for a new connection, set up from ``[limits]``.

    With ``limits.send_buffer_bytes`` the socket's kernel send buffer is fixed: left to the
    OS it autotunes up to megabytes, which a stalled reader fills before its outbox (and so
    merging and the 4000 close) ever sees it.
    """
    if limits.send_buffer_bytes and transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.send_buffer_bytes)
            except OSError as exc:  # not every transport has a real socket
                log.debug("SO_SNDBUF not set: %s", exc)
    return Subscriber(
        sink,
        limits.outbox_bytes,
        transport=transport,
        write_now=write_now,
        coalesce_seconds=limits.coalesce_ms / 1000,
        close_timeout=limits.close_timeout_seconds,
    )
