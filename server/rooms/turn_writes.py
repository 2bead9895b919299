"""This instance's writes to a room: the turn lease, fenced appends, cancels and orphans.

Only the holder of a room's turn lease writes its events. Events are stored through the
broker before local subscribers see them; a refused write (the lease was lost, the epoch
changed) stops the turn here and reloads the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from server.broker.base import Broker, BrokerUnavailable, Fenced, Record
from server.core.codec import encode
from server.core.errors import turn_in_progress
from server.core.messages import PromptRequest, SequencedEvent, TurnEnd, TurnStart
from server.core.room import TurnStarted
from server.core.types import TurnId
from server.core.wire_events import stored_turn
from server.rooms.replicas import Replicas
from server.rooms.room import Room, TurnLost

log = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 4


class TurnWrites:
    """Stores what this instance makes for its rooms, under the room's turn lease."""

    def __init__(self, broker: Broker, replicas: Replicas) -> None:
        self.broker = broker
        self.replicas = replicas

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
        self.replicas.deliver(room, events, encoded)

    async def _append(
        self,
        room: Room,
        records: Sequence[Record],
        started: tuple[str, str | None] | None,
        ended: bytes | None,
    ) -> None:
        """Store records in the order they were made.

        Retry while the broker is down, for as long as the lease would last.
        """
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
        self.replicas.need_sync(room, reload=True)

    async def claim(self, room: Room, request: PromptRequest) -> int | TurnStarted:
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
                await self.end_orphan(room, claim.turn)
            else:  # stale or epoch: catch up, then try again
                room.reload = room.reload or claim.status == "epoch"
                await self.replicas.sync_now(room)
        raise turn_in_progress(request.id)

    async def keep_lease(self, room: Room, fence: int) -> None:
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
                self.replicas.need_sync(room, reload=True)

    async def catch_up(self, room: Room, seq: int) -> None:
        """Read until the replica reaches ``seq`` (after taking a lease)."""
        for _ in range(CLAIM_ATTEMPTS):
            if room.state.seq >= seq:
                return
            await self.replicas.sync_now(room)

    async def end_orphan(self, room: Room, turn: str) -> None:
        """End a turn whose producer stopped renewing its lease (it died): truncated."""
        state = room.state
        claim = await self.broker.steal(state.name, state.epoch, turn, force=False)
        if claim.status == "gone":
            self.replicas.need_sync(room)  # it ended and this replica missed it
        if claim.status != "ok":
            return
        await self.catch_up(room, claim.seq)
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
