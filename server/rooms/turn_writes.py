"""This instance's writes to a room: the turn lease, fenced appends, cancels and orphans.

Only the holder of a room's turn lease writes its events. Events are stored through the
broker before local subscribers see them. A refused write (the lease was lost, the epoch
changed) stops the turn here and reloads the room, unless the broker lost the room (a wipe):
then the room is stored again from this instance's replica and the turn streams on
(``core.replica_rules``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from server.broker.base import Broker, BrokerUnavailable, Fenced, Record
from server.core.codec import decode_position, dump_json, encode, stored_turn
from server.core.errors import turn_in_progress
from server.core.messages import (
    PromptRequest,
    ResponsePosition,
    SequencedEvent,
    TurnEnd,
    TurnStart,
)
from server.core.replica_rules import CLAIM_INPUTS, Action, Input
from server.core.room import TurnStarted
from server.core.types import TurnId
from server.rooms.replicas import Replicas
from server.rooms.room import Room, TurnLost

log = logging.getLogger(__name__)

# Starts the turn's runner again from an upstream position; this instance holds the lease.
Resume = Callable[[Room, ResponsePosition], None]

CLAIM_ATTEMPTS = 4
RETRY_SECONDS = 0.2  # between writes while the broker is down


class TurnWrites:
    """Stores what this instance makes for its rooms, under the room's turn lease."""

    def __init__(self, broker: Broker, replicas: Replicas) -> None:
        self.broker = broker
        self.replicas = replicas
        # Background mode: each write keeps where the turn's upstream response was read to,
        # and a turn whose producer died goes on here from there (``resume``).
        self.resume: Resume | None = None

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
        kind = state.turns.kind(TurnId(first.turn))
        encoded = [encode(e) for e in events]
        records = [Record(e.seq, d, kind) for e, d in zip(events, encoded, strict=True)]
        started = (first.turn, prompt_id) if isinstance(first, TurnStart) else None
        ended = position = None
        if self.resume is not None and not isinstance(last, TurnEnd):
            at = state.turns.position(TurnId(last.turn))
            position = None if at is None else dump_json(at)
        if isinstance(last, TurnEnd):
            view = state.turns.view(TurnId(last.turn))
            assert view is not None, "a turn that just ended is retained"
            ended = stored_turn(view, kind)
        room.pending += 1
        room.settled.clear()
        try:
            reseeded = await self._append(room, records, started, ended, position)
        finally:
            room.pending -= 1
            if not room.pending:
                room.settled.set()
        if ended is not None:
            room.rules.on(Input.TURN_ENDED)
        if not reseeded:  # else its subscribers were closed to resume on the new epoch
            room.deliver(events, encoded)

    async def _append(
        self,
        room: Room,
        records: Sequence[Record],
        started: tuple[str, str | None] | None,
        ended: bytes | None,
        position: bytes | None,
    ) -> bool:
        """Store records in the order they were made.

        Retry while the broker is down, for as long as the lease would last. True when the room
        was stored again instead (the broker lost it): the seed holds these records.
        """
        state = room.state
        async with room.commit_lock:
            deadline = asyncio.get_running_loop().time() + self.broker.lease_seconds
            while True:
                try:
                    await self.broker.append(
                        state.name,
                        state.epoch,
                        room.fence,
                        records,
                        started=started,
                        ended=ended,
                        position=position,
                    )
                    return False
                except Fenced as exc:
                    await self._refused(room, Input.WRITE_REFUSED, str(exc), deadline)
                    return True
                except BrokerUnavailable as exc:
                    await self._wait_or_lose(room, exc, deadline)

    async def _wait_or_lose(self, room: Room, exc: BrokerUnavailable, deadline: float) -> None:
        """Wait before writing again, or give the turn up once the lease would be over.

        Raises:
            TurnLost: the broker stayed down for the lease's length.
        """
        if asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(RETRY_SECONDS)
            return
        self._carry_out(room, room.rules.on(Input.WRITE_TIMED_OUT), str(exc))
        raise TurnLost(str(exc)) from exc

    async def _refused(self, room: Room, what: Input, why: str, deadline: float) -> None:
        """A write or a renewal was refused.

        Store the room again if the broker lost it (the turn streams on here with a new fence),
        else the turn is lost here.

        Raises:
            TurnLost: the broker has the room, and its lease is no longer this instance's.
        """
        actions = room.rules.on(what)
        while Action.RESEED_LIVE in actions:
            try:
                if await self.replicas.reseed(room, lease=room.state.streaming_turn is not None):
                    return
                actions = ()  # reseed carried out SEED_TAKEN's actions
            except BrokerUnavailable as exc:
                await self._wait_or_lose(room, exc, deadline)
        self._carry_out(room, actions, why)
        raise TurnLost(why)

    def _carry_out(self, room: Room, actions: Sequence[Action], why: str) -> None:
        if Action.RELOAD in actions:
            log.warning(
                "room %s: a write was refused (%s); reloading from the broker", room.state.name, why
            )
            self.replicas.need_sync(room)

    async def claim(self, room: Room, request: PromptRequest) -> int | TurnStarted:
        """Take the room's turn lease: its fence, or the turn the prompt's id started."""
        for _ in range(CLAIM_ATTEMPTS):
            state = room.state
            claim = await self.broker.claim(state.name, state.epoch, state.seq, request.id)
            actions = room.rules.on(CLAIM_INPUTS[claim.status], claim.fence)
            if Action.TAKE_FENCE in actions:
                return claim.fence
            if Action.ANSWER_KNOWN in actions and claim.turn is not None:
                return TurnStarted(turn=TurnId(claim.turn), seq=claim.seq, event=None)
            if Action.REFUSE_BUSY in actions or Action.RETRY_CLAIM not in actions:
                break  # another turn streams, or an answer this standing does not expect
            if Action.END_ORPHAN in actions and claim.turn is not None:
                await self.end_orphan(room, claim.turn)
            else:  # stale or epoch: catch up (the standing says whether to reload)
                await self.replicas.sync_now(room)
        raise turn_in_progress(request.id)

    async def keep_lease(self, room: Room) -> None:
        """Renew the lease while this instance holds it.

        A refused renewal is handled as a refused write: the room is stored again if the broker
        lost it, else the turn stops here.
        """
        while room.fence:
            await asyncio.sleep(self.broker.lease_seconds / 3)
            fence = room.fence
            if not fence:
                return
            try:
                kept = await self.broker.renew(room.state.name, fence)
            except BrokerUnavailable as exc:
                log.info("room %s: lease not renewed: %s", room.state.name, exc)
                continue
            if kept or room.fence != fence:
                continue
            async with room.commit_lock:  # never beside a write, which may store it again
                if room.fence != fence:
                    continue
                deadline = asyncio.get_running_loop().time() + self.broker.lease_seconds
                try:
                    await self._refused(room, Input.LEASE_LOST, "lease lost", deadline)
                except TurnLost:
                    log.warning(
                        "room %s: the turn lease was lost; stopping the turn", room.state.name
                    )
                    if room.task is not None:
                        room.task.cancel()

    async def catch_up(self, room: Room, seq: int) -> None:
        """Read until the replica reaches ``seq`` (after taking a lease)."""
        for _ in range(CLAIM_ATTEMPTS):
            if room.state.seq >= seq:
                return
            await self.replicas.sync_now(room)

    async def stored_position(self, room: Room, turn: str) -> ResponsePosition | None:
        """The upstream position the broker keeps for ``turn``, if any (background mode)."""
        data = await self.broker.position(room.state.name)
        if data is None:
            return None
        try:
            position = decode_position(data)
        except ValueError as exc:
            log.warning("room %s: unreadable upstream position: %s", room.state.name, exc)
            return None
        return position if position.turn == turn else None

    async def _resumed(self, room: Room, turn: str) -> bool:
        """Go on with an orphan turn from its upstream position, holding its lease now."""
        assert self.resume is not None
        position = await self.stored_position(room, turn)
        if position is None or not room.state.resume_upstream(position):
            return False
        log.warning(
            "room %s: turn %s lost its producer; re-attaching to its upstream response after "
            "event %d",
            room.state.name,
            turn,
            position.after,
        )
        self.resume(room, position)
        return True

    async def end_orphan(self, room: Room, turn: str) -> None:
        """End a turn whose producer stopped renewing its lease (it died): truncated.

        In background mode the turn goes on here instead, re-attached to its upstream response
        where the producer stopped reading, when the broker keeps that position.
        """
        state = room.state
        claim = await self.broker.steal(state.name, state.epoch, turn, force=False)
        if claim.status == "gone":
            self.replicas.need_sync(room)  # it ended and this replica missed it
        if claim.status != "ok":
            return
        await self.catch_up(room, claim.seq)
        room.rules.on(Input.STEAL_OK, claim.fence)
        if self.resume is not None and await self._resumed(room, turn):
            return
        end = room.state.end_stream(TurnId(turn), time.time())
        if end is None:
            await self.broker.release(state.name, claim.fence)
            room.rules.on(Input.RELEASED)
            return
        log.warning(
            "room %s: turn %s lost its producer; ending it %s", state.name, turn, end.status
        )
        with contextlib.suppress(TurnLost):
            await self.commit(room, (end,))
