"""Shared helpers of the RoomState tests: a room, prompts and upstream SSE events."""

from __future__ import annotations

import json
from typing import Any

from server.core.messages import PromptRequest, SequencedEvent, TurnStart
from server.core.room import RoomState
from server.core.room_limits import RoomLimits
from server.core.sse import SSEEvent
from server.core.types import RoomName, TurnId

SECRET = "hunter2secret"
DONE = SSEEvent("[DONE]")


def make_room(limits: RoomLimits | None = None) -> RoomState:
    """A room named ``r`` on epoch ``e1`` that knows one secret."""
    return RoomState(RoomName("r"), "e1", limits, secrets=(SECRET,))


def start(
    room: RoomState, turn: str, content: str = "hi", pid: str | None = None, kind: Any = "room"
) -> TurnStart | None:
    """Start (or find) a turn; return its TurnStart event (None when found by id)."""
    request = PromptRequest(content=content, id=pid)
    return room.start_turn(request, turn_id=TurnId(turn), model="m", now=10.0, kind=kind).event


def sse(obj: object, event: str | None = None) -> SSEEvent:
    """An upstream SSE event carrying ``obj`` as JSON."""
    return SSEEvent(json.dumps(obj), event)


def text(piece: str, index: int = 0, finish: str | None = None) -> SSEEvent:
    """A content chunk for one choice."""
    delta = {"content": piece} if piece else {}
    return sse({"choices": [{"index": index, "delta": delta, "finish_reason": finish}]})


def feed(room: RoomState, turn: str, *events: SSEEvent) -> list[SequencedEvent]:
    """Feed events to a turn; return everything they made."""
    out: list[SequencedEvent] = []
    for event in events:
        out.extend(room.feed(TurnId(turn), event, 20.0))
    return out


def run_turn(room: RoomState, turn: str, answer: str, **kw: Any) -> None:
    """A whole completed turn answering ``answer``."""
    start(room, turn, **kw)
    feed(room, turn, text(answer), text("", finish="stop"), DONE)
