"""Rooms on this instance: their replicated state, subscribers, running turns and presence.

Every room's state is a replica of what the broker keeps. Events this instance makes (it
holds the room's turn lease) are stored through the broker first and published to local
subscribers once stored; events other instances make arrive from the broker and are applied
in seq order. A gap, a new epoch or a lost lease makes the room read the broker again, so
local subscribers never see an event the broker does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.broker.base import Broker, BrokerUnavailable, Record
from server.broker.memory import MemoryBroker, MemoryStore
from server.config import RoomsConfig
from server.core.codes import CloseCode, ErrorCode
from server.core.errors import ClientError, broker_unavailable
from server.core.messages import PromptRequest, TurnEnd
from server.core.replica_rules import Input
from server.core.room import RoomState, TurnStarted
from server.core.room_limits import RoomLimits
from server.core.types import RoomName
from server.rooms.producer import Producer
from server.rooms.replicas import WAIT_SECONDS, NotYet, Replicas
from server.rooms.room import Room
from server.rooms.subscriber import Subscriber
from server.rooms.turn_writes import TurnWrites

if TYPE_CHECKING:
    from server.rooms.metrics import Metrics
    from server.rooms.runner import TurnRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Instance-wide limits (0 = unlimited)."""

    max_rooms: int = 10_000
    max_subscribers: int = 0

    @classmethod
    def from_config(cls, rooms: RoomsConfig) -> HubLimits:
        """The limits that ``[rooms]`` sets."""
        return cls(max_rooms=rooms.max_rooms, max_subscribers=rooms.max_subscribers)


class Hub:
    """The rooms of this instance and the rules for entering, prompting and cancelling."""

    def __init__(
        self,
        room_limits: RoomLimits,
        limits: HubLimits,
        secrets_: tuple[str, ...],
        broker: Broker | None = None,
    ) -> None:
        self.rooms: dict[RoomName, Room] = {}
        self.metrics: Metrics | None = None
        self.merged_by_gone = 0  # deltas merged in the outboxes of subscribers that left
        self.slow_closes = 0  # subscribers that left after a 4000 close
        self.room_limits = room_limits
        self.limits = limits
        self._secrets = secrets_
        self.broker = broker or MemoryBroker(
            MemoryStore(room_limits.retained_events, room_limits.kept_turns, room_limits.max_bytes),
            "local",
        )
        self.replicas = Replicas(self.rooms, self.broker, room_limits, secrets_)
        self.writes = TurnWrites(self.broker, self.replicas)
        self.producer = Producer(
            self.broker, self.replicas, self.writes, self._spawn, self._maybe_unlisten
        )
        self._upkeep: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def attach_runner(self, runner: TurnRunner) -> None:
        """Set what runs a started turn against the upstream."""
        self.producer.runner = runner

    async def start(self) -> None:
        """Connect the broker and start the upkeep (presence refresh, orphaned turns)."""
        await self.broker.start(self)
        self._upkeep = asyncio.create_task(self._upkeep_forever(), name="hub-upkeep")

    # --- rooms -----------------------------------------------------------------------------

    def check_capacity(self, name: RoomName) -> None:
        """Refuse early (before an upgrade) when the room would be one too many.

        Raises:
            ClientError: ``unavailable`` when the room limit is reached.
        """
        limit = self.limits.max_rooms
        if limit and name not in self.rooms and len(self.rooms) >= limit:
            raise ClientError(
                ErrorCode.UNAVAILABLE,
                "the server has reached its room limit",
                close_code=CloseCode.TRY_AGAIN_LATER,
            )

    def room(self, name: RoomName) -> Room:
        """The room, created on first use (not loaded: ``open`` loads it).

        Raises:
            ClientError: ``unavailable`` when the room limit is reached.
        """
        room = self.rooms.get(name)
        if room is None:
            self.check_capacity(name)
            state = RoomState(name, "", self.room_limits, self._secrets)
            room = self.rooms[name] = Room(state, self.metrics)
        return room

    async def open(self, name: RoomName) -> Room:
        """The room, listening to the broker and caught up with it.

        Raises:
            ClientError: ``unavailable`` when the room limit is reached or the broker is down.
        """
        room = self.room(name)
        if not room.listening:
            room.listening = True
            opened = room.opening = asyncio.Event()
            try:
                await self.broker.listen(name)
                with contextlib.suppress(NotYet):  # waited for below
                    await self.replicas.sync_now(room)
                room.remote_viewers = max(0, await self.broker.viewers(name) - room.state.viewers)
            except BrokerUnavailable as exc:
                room.listening = False
                await self.broker.unlisten(name)
                raise broker_unavailable() from exc
            finally:
                room.opening = None
                opened.set()
            asyncio.get_running_loop().call_soon(self._maybe_unlisten, room)
        elif room.opening is not None:
            await room.opening.wait()  # another open is subscribing and loading it
            if not room.listening:
                raise broker_unavailable()
        # What the caller reads next must be stored already: wait for writes in flight, and
        # for a refused write's reload.
        while room.pending or room.reloading:
            if room.pending:
                await room.settled.wait()
                continue
            try:
                await self.replicas.sync_now(room)
            except NotYet:  # the broker lost the room: its producer stores it again first
                await asyncio.sleep(WAIT_SECONDS)
            except BrokerUnavailable as exc:
                raise broker_unavailable() from exc
        return room

    def _maybe_unlisten(self, room: Room) -> None:
        """Stop receiving a room nobody here watches or streams (reference counted)."""
        if room.listening and not room.subscribers and room.task is None and not room.busy:
            room.listening = False
            room.remote_viewers = 0  # no longer heard: only this instance's count is known
            self._spawn(self._unlisten(room.state.name))

    async def _unlisten(self, name: RoomName) -> None:
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.unlisten(name)

    def join(self, room: Room, sub: Subscriber) -> int:
        """Add a subscriber; returns the viewer count (every instance's).

        Raises:
            ClientError: ``unavailable`` when the room is full.
        """
        if self.limits.max_subscribers and len(room.subscribers) >= self.limits.max_subscribers:
            raise ClientError(
                ErrorCode.UNAVAILABLE,
                "this room has reached its subscriber limit",
                close_code=CloseCode.LIMIT_REACHED,
            )
        room.subscribers.add(sub)
        room.state.join()
        self._presence_changed(room, joined=True)
        self._share_viewers(room)
        return room.viewers

    def leave(self, room: Room, sub: Subscriber) -> None:
        """Remove a subscriber (idempotent)."""
        if sub in room.subscribers:
            room.subscribers.discard(sub)
            room.state.leave()
            self.merged_by_gone += sub.outbox.merged
            self.slow_closes += sub.close_code == CloseCode.SLOW_CONSUMER
            room.idle_since = time.monotonic()
            self._presence_changed(room)
            self._share_viewers(room)
            self._maybe_unlisten(room)

    # --- presence --------------------------------------------------------------------------

    def _presence_changed(self, room: Room, *, joined: bool = False) -> None:
        loop = asyncio.get_running_loop()
        delay = room.presence.changed(loop.time(), joined=joined)
        if delay is not None:
            room.presence_timer = loop.call_later(delay, self._flush_presence, room)

    @staticmethod
    def _flush_presence(room: Room) -> None:
        room.presence_timer = None
        event = room.presence.flush(asyncio.get_running_loop().time(), room.viewers)
        if event is not None:
            room.publish((event,))

    def _share_viewers(self, room: Room) -> None:
        """Tell the broker this instance's count (one write in flight per room)."""
        room.viewers_dirty = True
        if room.viewers_task is None:
            room.viewers_task = asyncio.create_task(self._write_viewers(room))

    async def _write_viewers(self, room: Room) -> None:
        try:
            while room.viewers_dirty:
                room.viewers_dirty = False
                local = room.state.viewers
                total = await self.broker.set_viewers(room.state.name, local)
                self._remote_viewers(room, total - local)
        except BrokerUnavailable as exc:
            log.info("room %s: viewer count not shared: %s", room.state.name, exc)
        finally:
            room.viewers_task = None

    def _remote_viewers(self, room: Room, remote: int) -> None:
        remote = max(0, remote)
        if remote != room.remote_viewers:
            room.remote_viewers = remote
            self._presence_changed(room)

    def on_record(self, name: RoomName, epoch: str, record: Record) -> None:
        """A live record (broker callback): see ``Replicas.on_record``."""
        self.replicas.on_record(name, epoch, record)

    def on_reconnect(self) -> None:
        """The broker's live feed is back (broker callback): see ``Replicas.on_reconnect``."""
        self.replicas.on_reconnect()

    def on_presence(self, name: RoomName) -> None:
        """Another instance's viewer count changed (broker callback)."""
        room = self.rooms.get(name)
        if room is not None and room.loaded:
            self._spawn(self._read_viewers(room))

    async def _read_viewers(self, room: Room) -> None:
        with contextlib.suppress(BrokerUnavailable):
            total = await self.broker.viewers(room.state.name)
            self._remote_viewers(room, total - room.state.viewers)

    # --- this instance's turns (``Producer``) ---------------------------------------------

    async def submit(self, room: Room, request: PromptRequest, **how: Any) -> TurnStarted:
        """Start a turn for a prompt, or find the one its id started (``Producer.submit``)."""
        return await self.producer.submit(room, request, **how)

    async def cancel(self, room: Room, turn_id: str) -> TurnEnd:
        """Cancel a streaming turn, whichever instance streams it (``Producer.cancel``)."""
        return await self.producer.cancel(room, turn_id)

    # --- upkeep ----------------------------------------------------------------------------

    async def _upkeep_forever(self) -> None:
        period = max(0.05, self.broker.lease_seconds / 2)
        while True:
            await asyncio.sleep(period)
            try:
                await self.upkeep()
            except BrokerUnavailable as exc:
                log.info("upkeep: broker unavailable: %s", exc)

    async def upkeep(self) -> None:
        """Refresh this instance's viewer counts.

        Notice a wiped broker; end turns whose producer went silent.
        """
        now = time.monotonic()
        for room in tuple(self.rooms.values()):
            if not (room.listening and room.loaded):
                continue
            if not room.fence and await self.broker.epoch(room.state.name) != room.state.epoch:
                if room.rules.on(Input.EPOCH_DIFFERS):
                    self.replicas.need_sync(room)
                continue
            if room.state.viewers:
                await self.broker.set_viewers(room.state.name, room.state.viewers, announce=False)
            turn = room.state.streaming_turn
            silent = now - room.last_event_at >= self.broker.lease_seconds
            if turn is not None and room.task is None and not room.fence and silent:
                await self.writes.end_orphan(room, turn)

    def forget_idle(
        self, now: float, idle_seconds: float, empty_seconds: float | None = None
    ) -> int:
        """Forget rooms with no viewer and no turn for a while; returns how many.

        A while is ``idle_seconds``, or ``empty_seconds`` for a room nothing ever happened in (seq
        0, such as one a bare GET made).
        """
        stale = [
            name
            for name, room in self.rooms.items()
            if room.state.is_idle()
            and room.task is None
            and not room.listening
            and now - room.idle_since
            >= (empty_seconds if empty_seconds is not None and not room.state.seq else idle_seconds)
        ]
        for name in stale:
            room = self.rooms.pop(name)
            if room.presence_timer is not None:
                room.presence_timer.cancel()
            self._spawn(self.broker.forget(name))
        return len(stale)

    async def close(self) -> None:
        """Stop every running turn (shutdown); their ``turn.end`` is stored and queued."""
        tasks = [r.task for r in self.rooms.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for room in self.rooms.values():
            if room.presence_timer is not None:
                room.presence_timer.cancel()

    async def stop(self) -> None:
        """Stop the upkeep and the room tasks, then disconnect the broker (after ``close``)."""
        sides = [
            side
            for room in self.rooms.values()
            for side in (room.sync_task, room.viewers_task, room.lease_task)
            if side is not None
        ]
        sides += self._background
        if self._upkeep is not None:
            sides.append(self._upkeep)
            self._upkeep = None
        for side in sides:
            side.cancel()
        await asyncio.gather(*sides, return_exceptions=True)
        await self.broker.close()
