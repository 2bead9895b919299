"""Keeping each room's replica in step with the broker, as ``core.replica_rules`` decides.

Events other instances made arrive live and are applied in seq order; a gap (a missed
message) reads the missing events from the broker; a new epoch, or events the broker no
longer has, reload the room. Local subscribers then get exactly what they missed, or are
closed to resume (a snapshot) when history they saw is gone. A broker that lost the room (a
wipe) gets it back from a replica: see ``reseed``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterable, Mapping

from server.broker.base import Broker, BrokerUnavailable, Loaded, Record, Seed
from server.core.codec import decode_event, encode, stored_turn, turn_from_store
from server.core.messages import SequencedEvent, TurnEnd, TurnKind
from server.core.replica_rules import Action, Input, heard, store_empty
from server.core.room import RoomState, StoredRoom
from server.core.room_limits import RoomLimits
from server.core.types import RoomName
from server.rooms.room import Room

log = logging.getLogger(__name__)

SYNC_RETRY_MAX_SECONDS = 5.0
WAIT_SECONDS = 0.1  # between looks at a wiped room whose producer should re-seed it


class NotYet(Exception):
    """The room cannot be read yet: its producer is expected to re-seed it first."""


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
        if room is None or not room.listening:
            return
        if room.sync_task is not None:
            room.sync_again = True  # the running catch-up reads it
            return
        state = room.state
        for action in room.rules.on(heard(epoch == state.epoch, record.seq, state.seq)):
            if action is Action.APPLY:
                self._apply_records(room, (record,))
            else:  # READ_AFTER or RELOAD: the standing says which
                self.need_sync(room)

    def on_reconnect(self) -> None:
        """The broker's live feed was down: read what every listening room missed."""
        for room in self.rooms.values():
            if room.listening and room.rules.on(Input.RECONNECTED):
                self.need_sync(room)

    def _apply_records(self, room: Room, records: Iterable[Record]) -> None:
        state = room.state
        for record in records:
            if record.seq <= state.seq:
                continue
            try:
                event = decode_event(record.data)
                state.apply(event, time.time(), record.kind)
            except ValueError as exc:
                log.warning("room %s: unreadable record %d: %s", state.name, record.seq, exc)
                self.need_sync(room, reload=True)
                return
            room.deliver((event,), (record.data,))
            if isinstance(event, TurnEnd) and room.task is not None and room.fence:
                log.info(
                    "room %s: turn %s ended elsewhere (%s)", state.name, event.turn, event.status
                )
                if Action.STOP_UPSTREAM in room.rules.on(Input.TURN_ENDED_ELSEWHERE):
                    room.task.cancel()

    def need_sync(self, room: Room, *, reload: bool = False) -> None:
        """Catch the room up in the background (``reload``: rebuild it from the broker)."""
        if reload:
            room.rules.need_reload()
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
                except NotYet:
                    await asyncio.sleep(WAIT_SECONDS)
                    room.sync_again = True
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
        """Catch the replica up with the broker (load it on first use or when lost).

        Raises:
            NotYet: the broker lost the room and its producer should re-seed it first.
            BrokerUnavailable: the broker did not answer.
        """
        async with room.lock:
            state = room.state
            if room.reloading:
                await self._reload(room)
                return
            if room.fence:
                return  # this instance holds the lease: it is the room's only writer
            records = await self.broker.read(state.name, state.epoch, state.seq)
            if records is None:
                room.rules.on(Input.READ_GONE)
                await self._reload(room)
            else:
                self._apply_records(room, records)

    async def _reload(self, room: Room) -> None:
        """Rebuild the room from the broker.

        Local subscribers get what they missed, or are closed to resume (a snapshot) when their
        history is gone. A broker without the room gets this replica back (``reseed``), unless
        the replica is empty.
        """
        loaded = await self.broker.find(room.state.name)
        if loaded is None:
            loaded = await self._store_empty(room)
        if loaded is not None:
            self._take(room, loaded)

    def _take(self, room: Room, loaded: Loaded) -> None:
        """Replace the replica with the room as the broker keeps it; tell its subscribers."""
        old = room.state
        room.wiped_since = None
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
                events.append((decode_event(record.data), record.kind))
            except ValueError as exc:
                log.warning("room %s: unreadable record %d: %s", old.name, record.seq, exc)
                events.clear()  # keep only what follows it: the log must be consecutive
                continue
            encoded[record.seq] = record.data
        stored = StoredRoom(loaded.seq, loaded.turn_count, ended, events, now)
        state = RoomState.restore(old.name, loaded.epoch, stored, self.room_limits, self.secrets)
        state.viewers = old.viewers
        room.state = state
        first_load = not room.loaded
        room.rules.on(Input.LOADED)
        if first_load or not room.subscribers:
            room.delivered = state.seq
            return
        log.info(
            "room %s: reloaded from the broker (epoch %s, seq %d)", old.name, state.epoch, state.seq
        )
        replay = state.resume(old.epoch, room.delivered)  # None on a new epoch
        if replay is None:
            room.history_lost()
        elif replay:
            room.deliver(replay, [encoded.get(e.seq) or encode(e) for e in replay])
        room.last_event_at = time.monotonic()

    async def _store_empty(self, room: Room) -> Loaded | None:
        """The broker has no history of the room: a new room, or one it lost (wiped).

        Returns:
            The room as the broker made it, when this instance knew nothing of it.
        """
        now = time.monotonic()
        if room.wiped_since is None and room.loaded:
            room.wiped_since = now
            log.warning("room %s: the broker lost the room (wiped?)", room.state.name)
        live_elsewhere = room.state.streaming_turn is not None and room.task is None
        what = store_empty(
            live_turn_elsewhere=live_elsewhere,
            waited=now - (room.wiped_since or now),
            lease_seconds=self.broker.lease_seconds,
        )
        for action in room.rules.on(what):
            if action is Action.WAIT:
                raise NotYet(room.state.name)
            if action is Action.RESEED:
                await self.reseed(room, lease=False)
            if action is Action.LOAD_NEW:
                return await self.broker.load(room.state.name, secrets.token_hex(6))
        return None

    async def reseed(self, room: Room, *, lease: bool) -> bool:
        """Store this replica as the room's new epoch (the broker lost the room).

        The seed is the ended turns it keeps and the live turn so far. Local subscribers are
        closed to resume; the new epoch's snapshot has everything they saw.

        Args:
            room: the room the broker lost.
            lease: this instance streams the live turn and keeps its lease, with a new fence.

        Returns:
            False when the broker has a history of the room again (not this replica's).
        """
        state = room.state
        seed = state.seed_view(time.time())
        epoch = secrets.token_hex(6)
        fence = await self.broker.seed(
            state.name,
            Seed(
                epoch=epoch,
                seq=seed.seq,
                turn_count=seed.turn_count,
                ended=tuple(stored_turn(view, kind) for view, kind in seed.ended),
                records=tuple(Record(e.seq, encode(e), kind) for e, kind in seed.events),
                streaming=state.streaming_turn,
            ),
            lease=lease,
        )
        if fence is None:
            log.info("room %s: another instance stored the room first", state.name)
            for action in room.rules.on(Input.SEED_TAKEN):
                if action is Action.RELOAD:
                    self.need_sync(room)
            return False
        log.warning(
            "room %s: stored again from this instance as epoch %s (seq %d, %d ended turn(s)%s)",
            state.name,
            epoch,
            seed.seq,
            len(seed.ended),
            f", turn {state.streaming_turn} streaming on" if state.streaming_turn else "",
        )
        room.wiped_since = None
        if Action.NEW_EPOCH in room.rules.on(Input.SEEDED, fence):
            state.epoch = epoch
            room.history_lost()
        return True
