"""The in-process broker (``memory://``), the default for one instance.

Several hubs in one process may share a ``MemoryStore`` (the contract tests run two
"instances" on one); each gets its own ``MemoryBroker``. Records keep references to the
bytes the producer encoded, so the store costs a deque slot per event, not a copy.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from server.core.clock import Clock, monotonic
from server.core.types import RoomName

from .base import Broker, BrokerListener, Claim, Fenced, Loaded, Record, Seed

# How long a prompt id is remembered for idempotency (the Redis backend uses the same).
PROMPT_ID_SECONDS = 3600.0


@dataclass(slots=True)
class _Room:
    epoch: str
    records: deque[Record]
    seq: int = 0
    fence: int = 0
    turn_count: int = 0
    holder: int = 0  # the fence holding the lease, 0 when free
    lease_until: float = 0.0
    streaming: str | None = None
    position: bytes | None = None  # the streaming turn's upstream position
    ended: deque[bytes] = field(default_factory=deque)
    size: int = 0  # bytes of the records and ended turns kept
    prompt_ids: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    viewers: dict[str, int] = field(default_factory=dict)


class MemoryStore:
    """What the instances of one process share."""

    def __init__(self, max_events: int = 10_000, max_turns: int = 20, max_bytes: int = 0) -> None:
        self.max_events = max(1, max_events)
        self.max_turns = max(1, max_turns)
        self.max_bytes = max_bytes  # per room (0 = unlimited); the oldest go first
        self.rooms: dict[RoomName, _Room] = {}
        self.brokers: list[MemoryBroker] = []

    def trim(self, kept: _Room) -> None:
        """Forget a room's oldest records, then its oldest ended turns, past the limits."""
        budget = self.max_bytes
        records, ended = kept.records, kept.ended
        while len(records) > self.max_events or (
            budget and len(records) > 1 and kept.size > budget
        ):
            kept.size -= len(records.popleft().data)
        while len(ended) > self.max_turns or (budget and len(ended) > 1 and kept.size > budget):
            kept.size -= len(ended.popleft())

    def wipe(self) -> None:
        """Forget everything (what a wiped Redis does; for tests)."""
        self.rooms.clear()


class MemoryBroker(Broker):
    """One instance's view of a ``MemoryStore``."""

    def __init__(
        self,
        store: MemoryStore,
        instance: str,
        lease_seconds: float = 5.0,
        clock: Clock = monotonic,
    ) -> None:
        """``instance``'s broker on ``store``; ``clock`` times its leases and prompt ids."""
        self.store = store
        self.instance = instance
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._listener: BrokerListener | None = None
        self._listening: dict[RoomName, int] = {}

    # --- lifecycle and listening -----------------------------------------------------------

    async def start(self, listener: BrokerListener) -> None:
        """Connect and start delivering live records to ``listener``."""
        self._listener = listener
        self.store.brokers.append(self)

    async def close(self) -> None:
        """Stop delivering and disconnect (this instance's viewer counts are dropped)."""
        if self in self.store.brokers:
            self.store.brokers.remove(self)
        for room in self.store.rooms.values():
            room.viewers.pop(self.instance, None)
        self._listener = None

    async def listen(self, room: RoomName) -> None:
        """Deliver the room's live records here (reference counted with ``unlisten``)."""
        self._listening[room] = self._listening.get(room, 0) + 1

    async def unlisten(self, room: RoomName) -> None:
        """One listener fewer; at zero the instance stops receiving the room."""
        left = self._listening.get(room, 0) - 1
        if left > 0:
            self._listening[room] = left
        else:
            self._listening.pop(room, None)

    def _deliver(self, name: RoomName, epoch: str, records: Sequence[Record]) -> None:
        """Hand stored records to the other instances that listen to the room.

        Not to the writer: it published them to its own subscribers when they were stored, so
        a single instance never takes the replica path for its own events.
        """
        for broker in tuple(self.store.brokers):
            listener = broker._listener
            if broker is not self and listener is not None and name in broker._listening:
                broker.events_heard += len(records)
                for record in records:
                    listener.on_record(name, epoch, record)

    # --- the room's store ------------------------------------------------------------------

    async def forget(self, room: RoomName) -> None:
        """This instance forgot an idle room."""
        kept = self._room(room)
        listened = any(room in broker._listening for broker in self.store.brokers)
        if kept is not None and not listened and kept.streaming is None:
            del self.store.rooms[room]

    def _room(self, name: RoomName) -> _Room | None:
        return self.store.rooms.get(name)

    async def load(self, room: RoomName, new_epoch: str) -> Loaded:
        """The room as kept; ``new_epoch`` becomes its epoch when it has none."""
        kept = self._room(room)
        if kept is None:
            kept = self.store.rooms[room] = _Room(epoch=new_epoch, records=deque())
        return self._loaded(kept)

    async def find(self, room: RoomName) -> Loaded | None:
        """The room as kept, or None when the store has none (it is not created)."""
        kept = self._room(room)
        return None if kept is None else self._loaded(kept)

    @staticmethod
    def _loaded(kept: _Room) -> Loaded:
        return Loaded(
            epoch=kept.epoch,
            seq=kept.seq,
            turn_count=kept.turn_count,
            ended=tuple(kept.ended),
            records=tuple(kept.records),
        )

    async def seed(self, room: RoomName, seed: Seed, *, lease: bool) -> int | None:
        """Store ``seed`` as the room's new epoch unless the room has a history again."""
        kept = self._room(room)
        if kept is not None and (kept.seq or kept.streaming is not None):
            return None  # the room has a history again: not this seed's
        fresh = _Room(epoch=seed.epoch, records=deque(seed.records), seq=seed.seq)
        fresh.fence = 0 if kept is None else kept.fence  # fences only grow
        fresh.turn_count, fresh.streaming = seed.turn_count, seed.streaming
        fresh.ended.extend(seed.ended)
        fresh.size = sum(len(r.data) for r in seed.records) + sum(len(e) for e in seed.ended)
        if kept is not None:
            fresh.viewers = kept.viewers
        self.store.rooms[room] = fresh
        self.store.trim(fresh)
        return self._take_lease(fresh) if lease else 0

    async def epoch(self, room: RoomName) -> str | None:
        """The room's epoch now (None when the broker has no such room, e.g. wiped)."""
        kept = self._room(room)
        return None if kept is None else kept.epoch

    async def position(self, room: RoomName) -> bytes | None:
        """The streaming turn's upstream position as last appended, None when none is kept."""
        kept = self._room(room)
        return None if kept is None else kept.position

    async def read(self, room: RoomName, epoch: str, after: int) -> tuple[Record, ...] | None:
        """Every record after seq ``after`` on ``epoch``, or None when some are gone."""
        kept = self._room(room)
        if kept is None or kept.epoch != epoch or not 0 <= after <= kept.seq:
            return None
        if after == kept.seq:
            return ()
        first = kept.records[0].seq if kept.records else kept.seq + 1
        if first > after + 1:
            return None
        return tuple(kept.records)[after + 1 - first :]

    def _lease_free(self, kept: _Room) -> bool:
        return kept.holder == 0 or self.clock() >= kept.lease_until

    def _take_lease(self, kept: _Room) -> int:
        kept.fence += 1
        kept.holder = kept.fence
        kept.lease_until = self.clock() + self.lease_seconds
        return kept.fence

    async def claim(self, room: RoomName, epoch: str, seq: int, prompt_id: str | None) -> Claim:
        """Take the room's turn lease to start a turn after ``seq``."""
        kept = self._room(room)
        if kept is None or kept.epoch != epoch:
            return Claim("epoch")
        if prompt_id is not None:
            known = kept.prompt_ids.get(prompt_id)
            if known is not None and known[2] > self.clock():
                return Claim("known", seq=known[1], turn=known[0])
        if not self._lease_free(kept):
            return Claim("busy", seq=kept.seq, turn=kept.streaming)
        if kept.streaming is not None:
            return Claim("orphan", seq=kept.seq, turn=kept.streaming)
        if seq != kept.seq:
            return Claim("stale", seq=kept.seq)
        return Claim("ok", fence=self._take_lease(kept), seq=kept.seq)

    async def steal(self, room: RoomName, epoch: str, turn: str, *, force: bool) -> Claim:
        """Take the lease of the streaming ``turn`` to end it."""
        kept = self._room(room)
        if kept is None or kept.epoch != epoch:
            return Claim("epoch")
        if kept.streaming != turn:
            return Claim("gone", seq=kept.seq)
        if not force and not self._lease_free(kept):
            return Claim("alive", seq=kept.seq)
        return Claim("ok", fence=self._take_lease(kept), seq=kept.seq, turn=turn)

    async def append(
        self,
        room: RoomName,
        epoch: str,
        fence: int,
        records: Sequence[Record],
        *,
        started: tuple[str, str | None] | None = None,
        ended: bytes | None = None,
        position: bytes | None = None,
    ) -> None:
        """Store and publish consecutive records after the room's seq, and renew the lease."""
        kept = self._room(room)
        if kept is None or kept.epoch != epoch:
            raise Fenced("the room's epoch changed")
        if records and self._stored_already(kept, records):
            return  # the same write again: stored once
        if kept.holder != fence or self._lease_free(kept):
            raise Fenced("the lease is not this fence's")
        if records and records[0].seq != kept.seq + 1:
            raise Fenced(f"expected seq {kept.seq + 1}, got {records[0].seq}")
        kept.records.extend(records)
        kept.size += sum(len(record.data) for record in records)
        kept.seq += len(records)
        if started is not None:
            turn, prompt_id = started
            kept.streaming = turn
            kept.turn_count += 1
            if prompt_id is not None:
                now = self.clock()
                kept.prompt_ids[prompt_id] = (turn, records[0].seq, now + PROMPT_ID_SECONDS)
                self._prune_prompt_ids(kept, now)
        if position is not None:
            kept.position = position
        if ended is not None:
            kept.streaming = None
            kept.position = None
            kept.holder = 0
            kept.ended.append(ended)
            kept.size += len(ended)
        else:
            kept.lease_until = self.clock() + self.lease_seconds
        self.store.trim(kept)
        self._deliver(room, epoch, records)

    @staticmethod
    def _stored_already(kept: _Room, records: Sequence[Record]) -> bool:
        first = records[0]
        if kept.seq < first.seq + len(records) - 1 or not kept.records:
            return False
        position = first.seq - kept.records[0].seq
        return 0 <= position < len(kept.records) and kept.records[position].data == first.data

    @staticmethod
    def _prune_prompt_ids(kept: _Room, now: float) -> None:
        for key in [k for k, (_, _, until) in kept.prompt_ids.items() if until <= now]:
            del kept.prompt_ids[key]

    async def renew(self, room: RoomName, fence: int) -> bool:
        """Extend the lease; False when it is no longer this fence's."""
        kept = self._room(room)
        if kept is None or kept.holder != fence or self._lease_free(kept):
            return False
        kept.lease_until = self.clock() + self.lease_seconds
        return True

    async def release(self, room: RoomName, fence: int) -> None:
        """Give the lease back (a claim that started nothing)."""
        kept = self._room(room)
        if kept is not None and kept.holder == fence:
            kept.holder = 0

    # --- presence --------------------------------------------------------------------------

    async def set_viewers(self, room: RoomName, count: int, *, announce: bool = True) -> int:
        """Record this instance's viewer count (``announce``: tell the other instances)."""
        kept = self._room(room)
        if kept is None:
            return count
        kept.viewers[self.instance] = count
        for broker in tuple(self.store.brokers) if announce else ():
            if broker is not self and broker._listener is not None and room in broker._listening:
                asyncio.get_running_loop().call_soon(broker._listener.on_presence, room)
        return sum(kept.viewers.values())

    async def viewers(self, room: RoomName) -> int:
        """The room's viewers summed over live instances."""
        kept = self._room(room)
        return 0 if kept is None else sum(kept.viewers.values())
