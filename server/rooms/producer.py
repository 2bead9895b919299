"""This instance's turns: starting them under the lease, running, cancelling, abandoning.

A prompt claims the room's turn lease through the broker (``TurnWrites.claim``), starts the
turn in the replica, stores its ``turn.start``, then runs the upstream here
(``TurnRunner``) while the lease is renewed. A turn whose runner left it unended is given
back and ended from the broker; in background mode a turn whose producer died elsewhere goes
on here (``resume_in_background``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from server.broker.base import Broker, BrokerUnavailable
from server.core.codes import ErrorCode
from server.core.errors import ClientError, broker_unavailable, turn_in_progress
from server.core.messages import PromptRequest, ResponsePosition, TurnEnd, TurnKind
from server.core.replica_rules import Input, runner_done
from server.core.responses_request import check_responses_options
from server.core.room import TurnStarted
from server.core.types import TurnId, UpstreamApi
from server.rooms.replicas import Replicas
from server.rooms.room import Room, TurnLost
from server.rooms.turn_writes import TurnWrites

if TYPE_CHECKING:
    from server.rooms.runner import TurnListener, TurnRunner

log = logging.getLogger(__name__)


class Producer:
    """Starts, runs and stops the turns this instance produces."""

    def __init__(
        self,
        broker: Broker,
        replicas: Replicas,
        writes: TurnWrites,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        settle: Callable[[Room], None],
    ) -> None:
        """``spawn`` runs background work; ``settle`` lets an unused room go (the hub's)."""
        self.broker = broker
        self.replicas = replicas
        self.writes = writes
        self.upstream_api: UpstreamApi = "chat"  # the API of room prompts' turns
        self.runner: TurnRunner | None = None
        self._spawn = spawn
        self._settle = settle

    async def submit(
        self,
        room: Room,
        request: PromptRequest,
        *,
        default_model: str,
        kind: TurnKind = "room",
        body: dict[str, Any] | None = None,
        listener: TurnListener | None = None,
        api: UpstreamApi | None = None,
    ) -> TurnStarted:
        """Start a turn for a prompt (or find the one its id started), on every instance.

        ``api`` is the API the turn's upstream speaks (the tap's endpoint), by default
        ``upstream_api``.

        Raises:
            ClientError: ``turn_in_progress`` while another turn streams; ``unavailable``
                when the broker is down; ``bad_request`` for an option the API lacks.
        """
        api = api or self.upstream_api
        if api == "responses" and body is None:
            check_responses_options(request.options, request.id)
        room.busy += 1
        try:
            return await self._submit(room, request, default_model, kind, body, listener, api)
        except (BrokerUnavailable, TurnLost) as exc:
            raise broker_unavailable(request.id) from exc
        finally:
            room.busy -= 1
            self._settle(room)

    async def _submit(
        self,
        room: Room,
        request: PromptRequest,
        default_model: str,
        kind: TurnKind,
        body: dict[str, Any] | None,
        listener: TurnListener | None,
        api: UpstreamApi,
    ) -> TurnStarted:
        state = room.state
        if request.id is None and (room.fence or state.streaming_turn is not None):
            raise turn_in_progress(request.id)
        claimed = await self.writes.claim(room, request)
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
                api=api,
            )
        except ClientError:
            await self._release(room, claimed)
            raise
        if started.event is None:
            await self._release(room, claimed)
            return started
        try:
            await self.writes.commit(room, (started.event,), prompt_id=request.id)
        except BaseException:
            # The room moved on (a seq, a streaming turn) but the broker may not have: drop
            # the lease and read the broker's truth, so no half-started turn holds the room.
            self._abandon(room, claimed, started.turn)
            raise
        log.info("room %s: turn %s started (seq %d)", state.name, started.turn, started.seq)
        assert self.runner is not None, "set the runner first"
        self._produce(
            room,
            started.turn,
            self.runner.run(
                room, started.turn, started.event.model, request.options, body, listener, api
            ),
        )
        return started

    def _produce(self, room: Room, turn: TurnId, work: Coroutine[Any, Any, None]) -> None:
        """Run ``turn``'s upstream here, under the lease this instance holds."""
        room.task = task = asyncio.create_task(work, name=f"turn-{turn}")
        task.add_done_callback(lambda _: self._turn_done(room, task, turn))
        room.lease_task = asyncio.create_task(self.writes.keep_lease(room))

    def resume_in_background(self) -> None:
        """Background mode: a turn whose producer died goes on here from its upstream position."""
        self.writes.resume = self._resume

    def _resume(self, room: Room, position: ResponsePosition) -> None:
        assert self.runner is not None, "set the runner first"
        turn = TurnId(position.turn)
        self._produce(room, turn, self.runner.resume(room, turn, position))

    async def _release(self, room: Room, fence: int) -> None:
        """Give back a lease that started nothing."""
        room.rules.on(Input.RELEASED)
        await self.broker.release(room.state.name, fence)

    def _turn_done(self, room: Room, task: asyncio.Task[None], turn: TurnId) -> None:
        if room.task is not task:
            return  # a cancel made way for another turn already
        room.task = None
        if room.lease_task is not None:
            room.lease_task.cancel()
            room.lease_task = None
        fence = room.fence
        left = runner_done(
            producing=bool(fence),
            writing=bool(room.pending),
            unended=room.state.streaming_turn in (turn, None),
        )
        if left is Input.ABANDONED:
            log.error("room %s: turn %s left unended by its runner", room.state.name, turn)
            self._abandon(room, fence, turn)
        self._settle(room)

    def _abandon(self, room: Room, fence: int, turn: TurnId) -> None:
        """Stop producing ``turn`` here.

        Give the lease back, reload the room from the broker, and end the turn there (truncated) if
        the broker has it streaming.
        """
        if room.fence == fence:
            room.rules.on(Input.ABANDONED)
        room.rules.need_reload()
        room.busy += 1  # listened to until this is done
        self._spawn(self._end_abandoned(room, fence, turn))

    async def _end_abandoned(self, room: Room, fence: int, turn: TurnId) -> None:
        try:
            await self.broker.release(room.state.name, fence)
            await self.replicas.sync_now(room)
            if room.state.streaming_turn == turn:
                await self.writes.end_orphan(room, turn)
        except (BrokerUnavailable, TurnLost) as exc:
            log.info("room %s: turn %s left to the upkeep: %s", room.state.name, turn, exc)
            self.replicas.need_sync(room, reload=True)
        finally:
            room.busy -= 1
            self._settle(room)

    async def cancel(self, room: Room, turn_id: str) -> TurnEnd:
        """Cancel a streaming turn (whichever instance streams it) and stop its upstream.

        Raises:
            ClientError: ``not_found`` or ``turn_ended``; ``unavailable`` (broker down).
        """
        room.busy += 1
        try:
            return await self._cancel(room, turn_id)
        except (BrokerUnavailable, TurnLost) as exc:
            raise broker_unavailable() from exc
        finally:
            room.busy -= 1
            self._settle(room)

    async def _cancel(self, room: Room, turn_id: str) -> TurnEnd:
        state = room.state
        state.check_cancel(turn_id)
        task = room.task
        if not (room.fence and task is not None and state.streaming_turn == turn_id):
            claim = await self.broker.steal(state.name, state.epoch, turn_id, force=True)
            if claim.status != "ok":
                raise ClientError(ErrorCode.TURN_ENDED, "the turn has already ended")
            await self.writes.catch_up(room, claim.seq)
            room.rules.on(Input.STEAL_OK, claim.fence)
        position = None
        if self.writes.resume is not None:  # background mode: the response runs on upstream
            position = state.turns.position(TurnId(turn_id))
            position = position or await self.writes.stored_position(room, turn_id)
        end = room.state.cancel(turn_id, time.time())
        log.info("room %s: turn %s cancelled", state.name, turn_id)
        await self.writes.commit(room, (end,))
        if task is not None:
            task.cancel()
        if position is not None and self.runner is not None:
            self._spawn(self.runner.cancel_response(state.name, position.response_id))
        return end
