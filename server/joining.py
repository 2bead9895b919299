"""Joining a room, shared by the WebSocket and the SSE endpoints.

The first messages of every subscription: ``welcome``, then the replay (resume) or the
snapshot, all queued before any live event can be, so they meet at exactly one seq.
"""

from __future__ import annotations

from .core.codec import encode
from .core.messages import Role, ServerMessage, Welcome
from .core.types import RoomName
from .hub import Hub, Room
from .ring import ring_of
from .subscriber import Subscriber


def send_one(sub: Subscriber, msg: ServerMessage) -> None:
    """Encode and queue one message for one subscriber."""
    sub.send(msg, encode(msg))


def attach(
    hub: Hub, name: RoomName, sub: Subscriber, resume: tuple[str, int] | None, role: Role
) -> Room:
    """Add ``sub`` to the room and queue its welcome and its snapshot or replay.

    Nothing here awaits: the snapshot (or replay) and the live events that follow meet at
    exactly one seq, no gap and no duplicate. The room is looked up here, after the
    handshake, because an idle room may have been forgotten while it was awaited.

    Raises:
        ClientError: ``unavailable`` when the room or subscriber limit is reached.
    """
    room = hub.room(name)
    state = room.state
    replay = state.resume(*resume) if resume is not None else None
    viewers = hub.join(room, sub)
    sub.pos = ring_of(room).end  # what was published before now is in what it gets here
    send_one(sub, Welcome(state.name, state.epoch, state.seq, role, replay is not None, viewers))
    if replay is None:
        send_one(sub, state.snapshot())
    else:
        for event in replay:
            send_one(sub, event)
    return room
