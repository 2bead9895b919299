"""Rooms on this instance: their state, subscribers, running turns and presence timers."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .core.codec import encode
from .core.errors import ClientError
from .core.messages import PromptRequest, ServerMessage, TurnEnd
from .core.presence import PresenceGate
from .core.room import RoomLimits, RoomState, TurnKind, TurnStarted
from .core.types import RoomName, TurnId
from .subscriber import SLOW_CONSUMER, Subscriber

if TYPE_CHECKING:
    from .metrics import Metrics
    from .turns import TurnListener

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Instance-wide limits (0 = unlimited)."""

    max_rooms: int = 10_000
    max_subscribers: int = 0


class Room:
    """One room on this instance: the core state plus everything that does I/O for it."""

    def __init__(self, state: RoomState, metrics: Metrics | None = None) -> None:
        self.state = state
        self.metrics = metrics
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.presence = PresenceGate()
        self.presence_timer: asyncio.TimerHandle | None = None
        self.idle_since = time.monotonic()

    def publish(self, events: Iterable[ServerMessage]) -> None:
        """Encode each event once and deliver it to every subscriber, a slice at a time in a
        large room (``ring``)."""
        from .ring import ring_of

        started = time.perf_counter()
        frames = [(event, encode(event)) for event in events]
        ring_of(self).publish(self, frames)
        if self.metrics is not None:
            for event, _ in frames:
                if type(event) is TurnEnd:
                    self.metrics.turns.labels(event.status).inc()
            self.metrics.publish.observe(time.perf_counter() - started)


class Hub:
    """The rooms of this instance and the rules for entering, prompting and cancelling."""

    def __init__(
        self, room_limits: RoomLimits, limits: HubLimits, secrets_: tuple[str, ...]
    ) -> None:
        self.rooms: dict[RoomName, Room] = {}
        self.metrics: Metrics | None = None
        self.merged_by_gone = 0  # deltas merged in the outboxes of subscribers that left
        self.slow_closes = 0  # subscribers that left after a 4000 close
        self.room_limits = room_limits
        self.limits = limits
        self._secrets = secrets_
        self._runner: TurnStarter | None = None

    def attach_runner(self, runner: TurnStarter) -> None:
        """Set what runs a started turn against the upstream."""
        self._runner = runner

    def room(self, name: RoomName) -> Room:
        """The room, created on first use.

        Raises:
            ClientError: ``unavailable`` when the room limit is reached.
        """
        room = self.rooms.get(name)
        if room is None:
            if self.limits.max_rooms and len(self.rooms) >= self.limits.max_rooms:
                raise ClientError(
                    "unavailable", "the server has reached its room limit", close_code=1013
                )
            epoch = secrets.token_hex(6)
            state = RoomState(name, epoch, self.room_limits, self._secrets)
            room = self.rooms[name] = Room(state, self.metrics)
        return room

    def join(self, room: Room, sub: Subscriber) -> int:
        """Add a subscriber; returns the viewer count.

        Raises:
            ClientError: ``unavailable`` when the room is full.
        """
        if self.limits.max_subscribers and len(room.subscribers) >= self.limits.max_subscribers:
            raise ClientError(
                "unavailable", "this room has reached its subscriber limit", close_code=4503
            )
        room.subscribers.add(sub)
        viewers = room.state.join()
        self._presence_changed(room, joined=True)
        return viewers

    def leave(self, room: Room, sub: Subscriber) -> None:
        """Remove a subscriber (idempotent)."""
        if sub in room.subscribers:
            room.subscribers.discard(sub)
            room.state.leave()
            self.merged_by_gone += sub.outbox.merged
            self.slow_closes += sub.close_code == SLOW_CONSUMER
            room.idle_since = time.monotonic()
            self._presence_changed(room)

    def _presence_changed(self, room: Room, *, joined: bool = False) -> None:
        loop = asyncio.get_running_loop()
        delay = room.presence.changed(loop.time(), joined=joined)
        if delay is not None:
            room.presence_timer = loop.call_later(delay, self._flush_presence, room)

    @staticmethod
    def _flush_presence(room: Room) -> None:
        room.presence_timer = None
        event = room.presence.flush(asyncio.get_running_loop().time(), room.state.viewers)
        if event is not None:
            room.publish((event,))

    def submit(
        self,
        room: Room,
        request: PromptRequest,
        *,
        default_model: str,
        kind: TurnKind = "room",
        body: dict[str, Any] | None = None,
        listener: TurnListener | None = None,
    ) -> TurnStarted:
        """Start a turn for a prompt (or find the one its id started).

        Raises:
            ClientError: ``turn_in_progress`` while another turn streams.
        """
        started = room.state.start_turn(
            request,
            turn_id=TurnId("t" + secrets.token_hex(5)),
            model=request.model or default_model,
            now=time.time(),
            kind=kind,
        )
        if started.event is not None:
            log.info(
                "room %s: turn %s started (seq %d)", room.state.name, started.turn, started.seq
            )
            room.publish((started.event,))
            assert self._runner is not None, "attach_runner() first"
            room.task = asyncio.create_task(
                self._runner.run(
                    room, started.turn, started.event.model, request.options, body, listener
                ),
                name=f"turn-{started.turn}",
            )
        return started

    def cancel(self, room: Room, turn_id: str) -> TurnEnd:
        """Cancel a streaming turn and stop its upstream request.

        Raises:
            ClientError: ``not_found`` or ``turn_ended``.
        """
        end = room.state.cancel(turn_id, time.time())
        log.info("room %s: turn %s cancelled", room.state.name, turn_id)
        room.publish((end,))
        if room.task is not None:
            room.task.cancel()
        return end

    def forget_idle(self, now: float, idle_seconds: float) -> int:
        """Forget rooms with no viewer and no turn for ``idle_seconds``; returns how many."""
        stale = [
            name
            for name, room in self.rooms.items()
            if room.state.is_idle() and now - room.idle_since >= idle_seconds
        ]
        for name in stale:
            room = self.rooms.pop(name)
            if room.presence_timer is not None:
                room.presence_timer.cancel()
        return len(stale)

    async def close(self) -> None:
        """Stop every running turn (shutdown)."""
        tasks = [r.task for r in self.rooms.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for room in self.rooms.values():
            if room.presence_timer is not None:
                room.presence_timer.cancel()


class TurnStarter(Protocol):
    """Runs a started turn; implemented by ``turns.TurnRunner``."""

    async def run(
        self,
        room: Room,
        turn_id: TurnId,
        model: str,
        options: Mapping[str, object] | None,
        body: dict[str, Any] | None = None,
        listener: TurnListener | None = None,
    ) -> None:
        """Stream the turn and publish its events until it ends."""
