"""Keeping each room's replica in step with the broker.

Events other instances made arrive live and are applied in seq order; a gap (a missed
message) reads the missing events from the broker; a new epoch, or events the broker no
longer has, reload the room. Local subscribers then get exactly what they missed, or are
closed to resume (a snapshot) when history they saw is gone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence

from server.broker.base import Broker, BrokerUnavailable, Record
from server.core.codec import encode
from server.core.codes import CloseCode
from server.core.messages import SequencedEvent, TurnEnd
from server.core.room import RoomLimits, RoomState, StoredRoom, TurnKind
from server.core.types import RoomName
from server.core.wire_events import event_from_wire, load_object, turn_from_store
from server.rooms.room import Room

log = logging.getLogger(__name__)

SYNC_RETRY_MAX_SECONDS = 5.0


class Replicas:
    """Applies the broker's records to the rooms of this instance."""

    def __init__(
        self,
        rooms: Mapping[RoomName, Room],
        broker: Broker,
        room_limits: RoomLimits,
        secrets_: tuple[str, ...],
    ) -> None:
        self.rooms = rooms
        self.broker = broker
        self.room_limits = room_limits
        self.secrets = secrets_

    def on_record(self, name: RoomName, epoch: str, record: Record) -> None:
        """A live record (broker callback): apply it in order, or read what is missing."""
        room = self.rooms.get(name)
        if room is None or not room.loaded or not room.listening:
            return
        state = room.state
        if room.sync_task is not None:
            room.sync_again = True  # the running catch-up reads it
        elif epoch != state.epoch:
            self.need_sync(room, reload=True)
        elif record.seq == state.seq + 1:
            self._apply_records(room, (record,))
        elif record.seq > state.seq:
            self.need_sync(room)

    def on_reconnect(self) -> None:
        """The broker's live feed was down: read what every listening room missed."""
        for room in self.rooms.values():
            if room.listening and room.loaded:
                self.need_sync(room)

    def _apply_records(self, room: Room, records: Iterable[Record]) -> None:
        state = room.state
        for record in records:
            if record.seq <= state.seq:
                continue
            try:
                event = event_from_wire(load_object(record.data))
                state.apply(event, time.time(), record.kind)
            except ValueError as exc:
                log.warning("room %s: unreadable record %d: %s", state.name, record.seq, exc)
                self.need_sync(room, reload=True)
                return
            self.deliver(room, (event,), (record.data,))
            if isinstance(event, TurnEnd) and room.task is not None and room.fence:
                log.info(
                    "room %s: turn %s ended elsewhere (%s)", state.name, event.turn, event.status
                )
                room.fence = 0
                room.task.cancel()

    def deliver(
        self, room: Room, events: Sequence[SequencedEvent], encoded: Sequence[bytes]
    ) -> None:
        """Publish ``events`` (with their ``encoded`` bytes) to the room's local subscribers."""
        room.publish(events, encoded)
        room.delivered = events[-1].seq
        room.last_event_at = time.monotonic()

    def need_sync(self, room: Room, *, reload: bool = False) -> None:
        """Sync the room from the broker (reloaded when ``reload``), one sync task at a time."""
        room.reload = room.reload or reload
        if room.sync_task is None:
            room.sync_task = asyncio.create_task(self._sync_loop(room))
        else:
            room.sync_again = True

    async def _sync_loop(self, room: Room) -> None:
        delay = 0.1
        try:
            while room.listening:
                room.sync_again = False
                try:
                    await self.sync_now(room)
                except BrokerUnavailable as exc:
                    log.info(
                        "room %s: catch-up failed (%s); again in %.1fs", room.state.name, exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, SYNC_RETRY_MAX_SECONDS)
                    room.sync_again = True
                if not room.sync_again:
                    break
        finally:
            room.sync_task = None

    async def sync_now(self, room: Room) -> None:
        """Catch the replica up with the broker (load it on first use or when lost)."""
        async with room.lock:
            state = room.state
            if room.reload or not room.loaded:
                await self._reload(room)
                return
            if room.fence:
                return  # this instance holds the lease: it is the room's only writer
            records = await self.broker.read(state.name, state.epoch, state.seq)
            if records is None:
                await self._reload(room)
            else:
                self._apply_records(room, records)

    async def _reload(self, room: Room) -> None:
        """Rebuild the room from the broker.

        Local subscribers get what they missed, or are closed to resume (a snapshot) when their
        history is gone.
        """
        old = room.state
        loaded = await self.broker.load(old.name, secrets.token_hex(6))
        now = time.time()
        ended = []
        for data in loaded.ended:
            try:
                ended.append(turn_from_store(data))
            except ValueError as exc:
                log.warning("room %s: unreadable stored turn: %s", old.name, exc)
        events: list[tuple[SequencedEvent, TurnKind]] = []
        encoded: dict[int, bytes] = {}
        for record in loaded.records:
            try:
                events.append((event_from_wire(load_object(record.data)), record.kind))
            except ValueError as exc:
                log.warning("room %s: unreadable record %d: %s", old.name, record.seq, exc)
                events.clear()  # keep only what follows it: the log must be consecutive
                continue
            encoded[record.seq] = record.data
        stored = StoredRoom(loaded.seq, loaded.turn_count, ended, events, now)
        state = RoomState.restore(old.name, loaded.epoch, stored, self.room_limits, self.secrets)
        state.viewers = old.viewers
        room.state, room.reload = state, False
        first_load, room.loaded = not room.loaded, True
        if room.task is not None and room.fence and state.streaming_turn is None:
            room.fence = 0
            room.task.cancel()
        if first_load or not room.subscribers:
            room.delivered = state.seq
            return
        log.info(
            "room %s: reloaded from the broker (epoch %s, seq %d)", old.name, state.epoch, state.seq
        )
        replay = state.resume(old.epoch, room.delivered)  # None on a new epoch
        if replay is None:
            log.warning(
                "room %s: history seen by %d subscriber(s) is gone; closing them to resume",
                old.name,
                len(room.subscribers),
            )
            for sub in tuple(room.subscribers):
                # PROTOCOL.md's 1011, "reconnect with backoff": the resume gets a snapshot.
                sub.close(CloseCode.INTERNAL_ERROR, "room history was lost; resume")
            room.delivered = state.seq
        elif replay:
            self.deliver(room, replay, [encoded.get(e.seq) or encode(e) for e in replay])
        room.last_event_at = time.monotonic()
