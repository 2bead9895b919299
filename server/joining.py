"""Joining a room, shared by the WebSocket and the SSE endpoints.

The first messages of every subscription: ``welcome``, then the replay (resume) or the
snapshot, all queued before any live event can be, so they meet at exactly one seq.
"""

from __future__ import annotations

from .core.codec import encode
from .core.messages import Role, ServerMessage, Welcome
from .hub import Hub, Room
from .subscriber import Subscriber


def send_one(sub: Subscriber, msg: ServerMessage) -> None:
    """Encode and queue one message for one subscriber."""
    sub.send(msg, encode(msg))


def attach(
    hub: Hub, room: Room, sub: Subscriber, resume: tuple[str, int] | None, role: Role
) -> None:
    """Add ``sub`` to the room and queue its welcome and its snapshot or replay.

    Nothing here awaits: the snapshot (or replay) and the live events that follow meet at
    exactly one seq, no gap and no duplicate. Call it right after ``await hub.open(name)``
    (after the handshake: an idle room may have been forgotten while it was awaited).

    Raises:
        ClientError: ``unavailable`` when the subscriber limit is reached.
    """
    state = room.state
    replay = state.resume(*resume) if resume is not None else None
    viewers = hub.join(room, sub)
    sub.pos = room.ring.end  # what was published before now is in what it gets here
    send_one(sub, Welcome(state.name, state.epoch, state.seq, role, replay is not None, viewers))
    if replay is None:
        send_one(sub, state.snapshot())
    else:
        for event in replay:
            send_one(sub, event)
