"""What a subscriber gets for the events it has not been sent yet (PROTOCOL.md, ``first_seq``).

A large room is served a slice of subscribers at a time (``server.rooms.rounds``): events
that arrive while a round is under way reach the subscribers it has not visited yet together
with the ones before them. Each run of consecutive deltas of one turn then goes out as one
merged delta (``first_seq..seq``, lossless), encoded once for every subscriber that missed
the same events; anything else goes out as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from .codec import encode
from .merge import merge_deltas
from .messages import Delta, ServerMessage

Frame = tuple[ServerMessage, bytes]


def _continues(last: Delta, delta: Delta) -> bool:
    start = delta.seq if delta.first_seq is None else delta.first_seq
    return delta.turn == last.turn and start == last.seq + 1


def catch_up(pending: Sequence[Frame]) -> list[Frame]:
    """The frames that deliver ``pending`` (encoded events, in order) with deltas merged.

    A lone delta keeps its own encoding, shared with every subscriber that gets it.
    """
    out: list[Frame] = []
    run: list[Frame] = []

    def close_run() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            merged = merge_deltas([msg for msg, _ in run if isinstance(msg, Delta)])
            out.append((merged, encode(merged)))
        run.clear()

    for frame in pending:
        msg = frame[0]
        if isinstance(msg, Delta):
            last = run[-1][0] if run else None
            if isinstance(last, Delta) and not _continues(last, msg):
                close_run()
            run.append(frame)
        else:
            close_run()
            out.append(frame)
    close_run()
    return out
