"""Joining a room, shared by the WebSocket and the SSE endpoints.

The first messages of every subscription: ``welcome``, then the replay (resume) or the
snapshot, all queued before any live event can be, so they meet at exactly one seq.
"""

from __future__ import annotations

from server.core.codec import encode
from server.core.messages import Role, ServerMessage, Welcome
from server.rooms.hub import Hub
from server.rooms.room import Room
from server.rooms.subscriber import Subscriber


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
    # Everything that could fail (the encoding of a large snapshot) happens before the
    # subscriber is counted: a join that fails leaves nothing behind.
    burst = [state.snapshot()] if replay is None else list(replay)
    encoded = [encode(msg) for msg in burst]
    viewers = hub.join(room, sub)
    try:
        sub.pos = room.rounds.end  # what was published before now is in what it gets here
        recovered = replay is not None
        send_one(sub, Welcome(state.name, state.epoch, state.seq, role, recovered, viewers))
        for msg, data in zip(burst, encoded, strict=True):
            sub.send(msg, data)
    except BaseException:
        hub.leave(room, sub)
        raise
