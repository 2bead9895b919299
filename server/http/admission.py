"""Budgets at the door.

Prompts and new rooms per principal (PROTOCOL.md, "Defaults and details"), shared by the WebSocket,
SSE, the HTTP API and the tap.

A prompt whose ``id`` the room already knows is answered before any budget and never counts
against it, also when several arrive at once: the first one goes through, the others wait for
it and get its turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from server.core.messages import PromptRequest
from server.core.room import TurnStarted
from server.core.types import RoomName
from server.http.guards import Budget
from server.rooms.hub import Hub
from server.rooms.room import Room


class PromptAdmission:
    """Spends the prompt budget on prompts that may start a turn, and on nothing else."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self._pending: dict[tuple[RoomName, str], asyncio.Event] = {}

    async def submit(
        self,
        hub: Hub,
        room: Room,
        request: PromptRequest,
        principal: str,
        *,
        default_model: str,
        **kwargs: Any,
    ) -> TurnStarted:
        """Start a turn for ``principal`` (or answer a replay), as ``Hub.submit`` does.

        Raises:
            ClientError: ``rate_limited`` past the budget; whatever ``Hub.submit`` raises.
        """
        if request.id is None:
            self.budget.spend(principal)
            return await hub.submit(room, request, default_model=default_model, **kwargs)
        key = (room.state.name, request.id)
        while True:
            known = room.state.prompt_turn(request.id)
            if known is not None:
                return known  # a replay: no budget
            first = self._pending.get(key)
            if first is None:
                break
            await first.wait()  # the same id is on its way: its answer is this one's too
        self.budget.spend(principal)
        done = self._pending[key] = asyncio.Event()
        try:
            started = await hub.submit(room, request, default_model=default_model, **kwargs)
        finally:
            del self._pending[key]
            done.set()
        if started.event is None:
            self.budget.give_back(principal)  # known to another instance: a replay after all
        return started


def enter_room(hub: Hub, rooms: Budget, name: RoomName, principal: str) -> None:
    """Spend the room-creation budget when ``name`` would be a new room here.

    Refuse early when the room limit is reached.

    Raises:
        ClientError: ``rate_limited`` past the budget; ``unavailable`` at the room limit.
    """
    if name not in hub.rooms:
        hub.check_capacity(name)
        rooms.spend(principal)
