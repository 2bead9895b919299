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
import secrets
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .broker.base import Broker, BrokerUnavailable, Fenced, Record
from .broker.memory import MemoryBroker, MemoryStore
from .core.codec import encode
from .core.errors import ClientError
from .core.messages import (
    PromptRequest,
    SequencedEvent,
    ServerMessage,
    TurnEnd,
    TurnStart,
)
from .core.presence import PresenceGate
from .core.room import RoomLimits, RoomState, StoredRoom, TurnKind, TurnStarted
from .core.types import RoomName, TurnId
from .core.wire_events import event_from_wire, load_object, stored_turn, turn_from_store
from .subscriber import SLOW_CONSUMER, Subscriber

if TYPE_CHECKING:
    from .metrics import Metrics
    from .turns import TurnListener

log = logging.getLogger(__name__)

# Close code for subscribers whose room lost history they had seen (the broker was wiped or
# rolled back): PROTOCOL.md's 1011, "reconnect with backoff"; the resume gets a snapshot.
HISTORY_LOST = 1011
CLAIM_ATTEMPTS = 4
SYNC_RETRY_MAX_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Instance-wide limits (0 = unlimited)."""

    max_rooms: int = 10_000
    max_subscribers: int = 0


class TurnLost(Exception):
    """This instance may no longer publish the turn (its lease was lost or refused)."""


class Room:
    """One room on this instance: the replicated state plus everything that does I/O for it."""

    def __init__(self, state: RoomState, hub: Hub, metrics: Metrics | None = None) -> None:
        self.state = state
        self.hub = hub
        self.metrics = metrics
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.presence = PresenceGate()
        self.presence_timer: asyncio.TimerHandle | None = None
        self.idle_since = time.monotonic()
        # Replication (see Hub): the lease's fence while this instance produces a turn, the
        # last seq local subscribers got, the other instances' viewers.
        self.fence = 0
        self.lease_task: asyncio.Task[None] | None = None
        self.delivered = state.seq
        self.remote_viewers = 0
        self.listening = False
        self.loaded = False
        self.lock = asyncio.Lock()  # loading and catching up, one at a time
        self.commit_lock = asyncio.Lock()  # this instance's writes, in the order made
        self.sync_task: asyncio.Task[None] | None = None
        self.sync_again = False
        self.reload = False
        self.last_event_at = time.monotonic()
        self.viewers_task: asyncio.Task[None] | None = None
        self.viewers_dirty = False
        # Writes made here but not stored yet: joiners wait for them (``Hub.open``), so no
        # snapshot shows what the broker may still refuse. ``busy``: prompts and cancels
        # under way, which keep the room listened to.
        self.pending = 0
        self.settled = asyncio.Event()
        self.settled.set()
        self.busy = 0

    @property
    def viewers(self) -> int:
        """Viewers on every instance (this one's are exact, the others' as last heard)."""
        return self.state.viewers + self.remote_viewers

    def publish(
        self, events: Iterable[ServerMessage], encoded: Sequence[bytes] | None = None
    ) -> None:
        """Encode each event once (unless ``encoded`` has it) and queue it for every
        subscriber."""
        started = time.perf_counter()
        for position, event in enumerate(events):
            data = encode(event) if encoded is None else encoded[position]
            for sub in self.subscribers:
                sub.send(event, data)
            if self.metrics is not None and type(event) is TurnEnd:
                self.metrics.turns.labels(event.status).inc()
        if self.metrics is not None:
            self.metrics.publish.observe(time.perf_counter() - started)


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
        self._runner: TurnStarter | None = None
        keep = max(room_limits.snapshot_turns, room_limits.history_turns, 1)
        self.broker = broker or MemoryBroker(
            MemoryStore(room_limits.retained_events, keep), "local"
        )
        self._upkeep: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def attach_runner(self, runner: TurnStarter) -> None:
        """Set what runs a started turn against the upstream."""
        self._runner = runner

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
                "unavailable", "the server has reached its room limit", close_code=1013
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
            room = self.rooms[name] = Room(state, self, self.metrics)
        return room

    async def open(self, name: RoomName) -> Room:
        """The room, listening to the broker and caught up with it.

        Raises:
            ClientError: ``unavailable`` when the room limit is reached or the broker is down.
        """
        room = self.room(name)
        if not room.listening:
            room.listening = True
            try:
                await self.broker.listen(name)
                await self._sync_now(room)
                room.remote_viewers = max(0, await self.broker.viewers(name) - room.state.viewers)
            except BrokerUnavailable as exc:
                room.listening = False
                await self.broker.unlisten(name)
                raise ClientError(
                    "unavailable", "the broker is unavailable", temporary=True, close_code=1013
                ) from exc
            asyncio.get_running_loop().call_soon(self._maybe_unlisten, room)
        elif not room.loaded:
            async with room.lock:  # another open is loading it
                pass
            if not room.loaded:
                raise ClientError("unavailable", "the broker is unavailable", temporary=True)
        while room.pending:  # what the caller reads next must be stored already
            await room.settled.wait()
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
                "unavailable", "this room has reached its subscriber limit", close_code=4503
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
            self.slow_closes += sub.close_code == SLOW_CONSUMER
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

    def on_presence(self, name: RoomName) -> None:
        """Another instance's viewer count changed (broker callback)."""
        room = self.rooms.get(name)
        if room is not None and room.loaded:
            self._spawn(self._read_viewers(room))

    async def _read_viewers(self, room: Room) -> None:
        with contextlib.suppress(BrokerUnavailable):
            total = await self.broker.viewers(room.state.name)
            self._remote_viewers(room, total - room.state.viewers)

    # --- events from the broker ------------------------------------------------------------

    def on_record(self, name: RoomName, epoch: str, record: Record) -> None:
        """A live record (broker callback): apply it in order, or read what is missing."""
        room = self.rooms.get(name)
        if room is None or not room.loaded or not room.listening:
            return
        state = room.state
        if room.sync_task is not None:
            room.sync_again = True  # the running catch-up reads it
        elif epoch != state.epoch:
            self._need_sync(room, reload=True)
        elif record.seq == state.seq + 1:
            self._apply_records(room, (record,))
        elif record.seq > state.seq:
            self._need_sync(room)

    def on_reconnect(self) -> None:
        """The broker's live feed was down: read what every listening room missed."""
        for room in self.rooms.values():
            if room.listening and room.loaded:
                self._need_sync(room)

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
                self._need_sync(room, reload=True)
                return
            self._deliver(room, (event,), (record.data,))
            if isinstance(event, TurnEnd) and room.task is not None and room.fence:
                log.info(
                    "room %s: turn %s ended elsewhere (%s)", state.name, event.turn, event.status
                )
                room.fence = 0
                room.task.cancel()

    def _deliver(
        self, room: Room, events: Sequence[SequencedEvent], encoded: Sequence[bytes]
    ) -> None:
        room.publish(events, encoded)
        room.delivered = events[-1].seq
        room.last_event_at = time.monotonic()

    def _need_sync(self, room: Room, *, reload: bool = False) -> None:
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
                    await self._sync_now(room)
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

    async def _sync_now(self, room: Room) -> None:
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
        """Rebuild the room from the broker; local subscribers get what they missed, or
        are closed to resume (a snapshot) when their history is gone."""
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
        state = RoomState.restore(old.name, loaded.epoch, stored, self.room_limits, self._secrets)
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
        replay = state.resume(old.epoch, room.delivered) if state.epoch == old.epoch else None
        if replay is None:
            log.warning(
                "room %s: history seen by %d subscriber(s) is gone; closing them to resume",
                old.name,
                len(room.subscribers),
            )
            for sub in tuple(room.subscribers):
                sub.close(HISTORY_LOST, "room history was lost; resume")
            room.delivered = state.seq
        elif replay:
            self._deliver(room, replay, [encoded.get(e.seq) or encode(e) for e in replay])
        room.last_event_at = time.monotonic()

    # --- this instance's writes ------------------------------------------------------------

    async def commit(
        self, room: Room, events: Sequence[SequencedEvent], *, prompt_id: str | None = None
    ) -> None:
        """Store events this instance made (holding the lease), then publish them here.

        Raises:
            TurnLost: the broker refused them (lease lost, epoch changed) or stayed down for
                the lease's length; the room reloads from the broker.
        """
        state = room.state
        first, last = events[0], events[-1]
        kind = state.turn_kind(TurnId(first.turn))
        encoded = [encode(e) for e in events]
        records = [Record(e.seq, d, kind) for e, d in zip(events, encoded, strict=True)]
        started = (first.turn, prompt_id) if isinstance(first, TurnStart) else None
        ended = None
        if isinstance(last, TurnEnd):
            view = state.turn_view(TurnId(last.turn))
            assert view is not None, "a turn that just ended is retained"
            ended = stored_turn(view, kind)
        room.pending += 1
        room.settled.clear()
        try:
            await self._append(room, records, started, ended)
        finally:
            room.pending -= 1
            if not room.pending:
                room.settled.set()
        if ended is not None:
            room.fence = 0
        self._deliver(room, events, encoded)

    async def _append(
        self,
        room: Room,
        records: Sequence[Record],
        started: tuple[str, str | None] | None,
        ended: bytes | None,
    ) -> None:
        """Store records in the order they were made; retry while the broker is down, for
        as long as the lease would last."""
        state = room.state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.broker.lease_seconds
        async with room.commit_lock:
            while True:
                try:
                    await self.broker.append(
                        state.name, state.epoch, room.fence, records, started=started, ended=ended
                    )
                    return
                except Fenced as exc:
                    self._lost(room, str(exc))
                    raise TurnLost(str(exc)) from exc
                except BrokerUnavailable as exc:
                    if loop.time() >= deadline:
                        self._lost(room, str(exc))
                        raise TurnLost(str(exc)) from exc
                    await asyncio.sleep(0.2)

    def _lost(self, room: Room, why: str) -> None:
        log.warning(
            "room %s: a write was refused (%s); reloading from the broker", room.state.name, why
        )
        room.fence = 0
        self._need_sync(room, reload=True)

    async def _claim(self, room: Room, request: PromptRequest) -> int | TurnStarted:
        """Take the room's turn lease: its fence, or the turn the prompt's id started."""
        for _ in range(CLAIM_ATTEMPTS):
            state = room.state
            claim = await self.broker.claim(state.name, state.epoch, state.seq, request.id)
            if claim.status == "ok":
                return claim.fence
            if claim.status == "known" and claim.turn is not None:
                return TurnStarted(turn=TurnId(claim.turn), seq=claim.seq, event=None)
            if claim.status == "busy":
                break
            if claim.status == "orphan" and claim.turn is not None:
                await self._end_orphan(room, claim.turn)
            else:  # stale or epoch: catch up, then try again
                room.reload = room.reload or claim.status == "epoch"
                await self._sync_now(room)
        raise ClientError(
            "turn_in_progress", "a turn is already streaming", ref=request.id, temporary=True
        )

    async def submit(
        self,
        room: Room,
        request: PromptRequest,
        *,
        default_model: str,
        kind: TurnKind = "room",
        body: dict[str, Any] | None = None,
        listener: TurnListener | None = None,
    ) -> TurnStarted:
        """Start a turn for a prompt (or find the one its id started), on every instance.

        Raises:
            ClientError: ``turn_in_progress`` while another turn streams; ``unavailable``
                when the broker is down.
        """
        room.busy += 1
        try:
            return await self._submit(room, request, default_model, kind, body, listener)
        except (BrokerUnavailable, TurnLost) as exc:
            raise ClientError(
                "unavailable",
                "the broker is unavailable; try again",
                ref=request.id,
                temporary=True,
            ) from exc
        finally:
            room.busy -= 1
            self._maybe_unlisten(room)

    async def _submit(
        self,
        room: Room,
        request: PromptRequest,
        default_model: str,
        kind: TurnKind,
        body: dict[str, Any] | None,
        listener: TurnListener | None,
    ) -> TurnStarted:
        state = room.state
        if request.id is None and (room.fence or state.streaming_turn is not None):
            raise ClientError(
                "turn_in_progress", "a turn is already streaming", ref=request.id, temporary=True
            )
        claimed = await self._claim(room, request)
        if isinstance(claimed, TurnStarted):
            return claimed
        state = room.state
        try:
            started = state.start_turn(
                request,
                turn_id=TurnId("t" + secrets.token_hex(5)),
                model=request.model or default_model,
                now=time.time(),
                kind=kind,
            )
        except ClientError:
            await self.broker.release(state.name, claimed)
            raise
        if started.event is None:
            await self.broker.release(state.name, claimed)
            return started
        room.fence = claimed
        await self.commit(room, (started.event,), prompt_id=request.id)
        log.info("room %s: turn %s started (seq %d)", state.name, started.turn, started.seq)
        assert self._runner is not None, "attach_runner() first"
        room.task = asyncio.create_task(
            self._runner.run(
                room, started.turn, started.event.model, request.options, body, listener
            ),
            name=f"turn-{started.turn}",
        )
        room.task.add_done_callback(lambda _: self._turn_done(room))
        room.lease_task = asyncio.create_task(self._keep_lease(room, claimed))
        return started

    def _turn_done(self, room: Room) -> None:
        room.task = None
        if room.lease_task is not None:
            room.lease_task.cancel()
            room.lease_task = None
        self._maybe_unlisten(room)

    async def _keep_lease(self, room: Room, fence: int) -> None:
        """Renew the lease while the turn streams; a lost lease stops the turn here."""
        while room.fence == fence:
            await asyncio.sleep(self.broker.lease_seconds / 3)
            try:
                kept = await self.broker.renew(room.state.name, fence)
            except BrokerUnavailable as exc:
                log.info("room %s: lease not renewed: %s", room.state.name, exc)
                continue
            if not kept and room.fence == fence:
                log.warning("room %s: the turn lease was lost; stopping the turn", room.state.name)
                room.fence = 0
                if room.task is not None:
                    room.task.cancel()
                self._need_sync(room, reload=True)

    async def cancel(self, room: Room, turn_id: str) -> TurnEnd:
        """Cancel a streaming turn (whichever instance streams it) and stop its upstream.

        Raises:
            ClientError: ``not_found`` or ``turn_ended``; ``unavailable`` (broker down).
        """
        room.busy += 1
        try:
            return await self._cancel(room, turn_id)
        except (BrokerUnavailable, TurnLost) as exc:
            raise ClientError(
                "unavailable", "the broker is unavailable; try again", temporary=True
            ) from exc
        finally:
            room.busy -= 1
            self._maybe_unlisten(room)

    async def _cancel(self, room: Room, turn_id: str) -> TurnEnd:
        state = room.state
        state.check_cancel(turn_id)
        task = room.task
        if not (room.fence and task is not None and state.streaming_turn == turn_id):
            claim = await self.broker.steal(state.name, state.epoch, turn_id, force=True)
            if claim.status != "ok":
                raise ClientError("turn_ended", "the turn has already ended")
            await self._catch_up(room, claim.seq)
            room.fence = claim.fence
        end = room.state.cancel(turn_id, time.time())
        log.info("room %s: turn %s cancelled", state.name, turn_id)
        await self.commit(room, (end,))
        if task is not None:
            task.cancel()
        return end

    async def _catch_up(self, room: Room, seq: int) -> None:
        """Read until the replica reaches ``seq`` (after taking a lease)."""
        for _ in range(CLAIM_ATTEMPTS):
            if room.state.seq >= seq:
                return
            await self._sync_now(room)

    async def _end_orphan(self, room: Room, turn: str) -> None:
        """End a turn whose producer stopped renewing its lease (it died): truncated."""
        state = room.state
        claim = await self.broker.steal(state.name, state.epoch, turn, force=False)
        if claim.status == "gone":
            self._need_sync(room)  # it ended and this replica missed it
        if claim.status != "ok":
            return
        await self._catch_up(room, claim.seq)
        end = room.state.end_stream(TurnId(turn), time.time())
        if end is None:
            await self.broker.release(state.name, claim.fence)
            return
        log.warning(
            "room %s: turn %s lost its producer; ending it %s", state.name, turn, end.status
        )
        room.fence = claim.fence
        with contextlib.suppress(TurnLost):
            await self.commit(room, (end,))

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
        """Refresh this instance's viewer counts; notice a wiped broker; end turns whose
        producer went silent."""
        now = time.monotonic()
        for room in tuple(self.rooms.values()):
            if not (room.listening and room.loaded):
                continue
            if not room.fence and await self.broker.epoch(room.state.name) != room.state.epoch:
                self._need_sync(room, reload=True)
                continue
            if room.state.viewers:
                await self.broker.set_viewers(room.state.name, room.state.viewers, announce=False)
            turn = room.state.streaming_turn
            silent = now - room.last_event_at >= self.broker.lease_seconds
            if turn is not None and room.task is None and not room.fence and silent:
                await self._end_orphan(room, turn)

    def forget_idle(self, now: float, idle_seconds: float) -> int:
        """Forget rooms with no viewer and no turn for ``idle_seconds``; returns how many."""
        stale = [
            name
            for name, room in self.rooms.items()
            if room.state.is_idle()
            and room.task is None
            and not room.listening
            and now - room.idle_since >= idle_seconds
        ]
        for name in stale:
            room = self.rooms.pop(name)
            if room.presence_timer is not None:
                room.presence_timer.cancel()
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
