"""The WebSocket heartbeat of a whole instance: who gets a ping, who is dropped (sans-I/O).

A connection that has been silent for a ping interval gets a ping (RFC 6455, section 5.5.2);
one that then stays silent for half an interval more is dropped, as aiohttp's per-connection
heartbeat would (its ``heartbeat`` argument). Instead of a timer per connection, one wheel
serves them all: the connections are dealt over ``spokes`` sets in turn, and each tick of the
driver visits one set, so every connection is visited once per half interval, and the pings
of thousands of viewers that joined at once go out spread over the half interval, a set per
tick, not all together.

Anything the peer sends counts as a sign of life (a pong, a prompt, its own ping); the driver
sets ``heard`` when a frame arrives, and the visit clears it.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Generic, TypeVar

SPOKES = 16  # sets visited in turn: a tick every 1/SPOKES of half an interval


def tick_seconds(interval: float, spokes: int = SPOKES) -> float:
    """The time between two ticks.

    Each connection is then visited once per half ``interval``.
    """
    return interval / 2 / spokes


class Beat(Enum):
    """What a visit found about one connection."""

    QUIET = "quiet"  # heard from during the last half interval (or just joined)
    SILENT = "silent"  # nothing for a half interval
    PINGED = "pinged"  # nothing for a whole interval: pinged, waiting for any answer


class Action(Enum):
    """What the driver does for a visited connection."""

    NOTHING = "nothing"
    PING = "ping"
    DROP = "drop"


# (state, heard since the last visit) -> (next state, action). An answer to a ping dates from
# the ping, so an idle but live viewer is pinged once per interval, not once per 1.5.
VISIT: dict[tuple[Beat, bool], tuple[Beat, Action]] = {
    (Beat.QUIET, True): (Beat.QUIET, Action.NOTHING),
    (Beat.QUIET, False): (Beat.SILENT, Action.NOTHING),
    (Beat.SILENT, True): (Beat.QUIET, Action.NOTHING),
    (Beat.SILENT, False): (Beat.PINGED, Action.PING),
    (Beat.PINGED, True): (Beat.SILENT, Action.NOTHING),
    (Beat.PINGED, False): (Beat.PINGED, Action.DROP),
}


class Pulse:
    """What the heartbeat knows of one connection; drivers subclass it for their sockets."""

    __slots__ = ("beat", "heard", "spoke")

    def __init__(self) -> None:
        self.heard = False  # set by the driver whenever the peer sends a frame
        self.beat = Beat.QUIET
        self.spoke = -1  # the wheel's set that holds it; -1 when in none


P = TypeVar("P", bound=Pulse)


class HeartbeatWheel(Generic[P]):
    """The connections of an instance, spread over ``spokes`` sets visited in turn."""

    def __init__(self, spokes: int = SPOKES) -> None:
        """An empty wheel; ``spokes`` ticks make half a ping interval."""
        self._spokes: list[set[P]] = [set() for _ in range(spokes)]
        self._hand = 0  # the set the next tick visits
        self._deal = 0  # the set the next connection joins

    def __len__(self) -> int:
        return sum(len(spoke) for spoke in self._spokes)

    def __iter__(self) -> Iterator[P]:
        """The watched connections (in no particular order)."""
        for spoke in self._spokes:
            yield from spoke

    def add(self, conn: P) -> None:
        """Start watching ``conn``.

        Joining counts as hearing from it, so its first ping comes after a whole interval of silence
        at the earliest, as for any other.
        """
        conn.spoke = self._deal
        self._deal = (self._deal + 1) % len(self._spokes)
        conn.heard = True
        self._spokes[conn.spoke].add(conn)

    def discard(self, conn: P) -> None:
        """Stop watching ``conn`` (idempotent)."""
        if conn.spoke >= 0:
            self._spokes[conn.spoke].discard(conn)
            conn.spoke = -1

    def tick(self) -> tuple[list[P], list[P]]:
        """Visit the next set: the connections to ping, and those to drop (no longer watched).

        Returns:
            ``(ping, drop)``.
        """
        spoke = self._spokes[self._hand]
        self._hand = (self._hand + 1) % len(self._spokes)
        ping: list[P] = []
        drop: list[P] = []
        for conn in spoke:
            conn.beat, action = VISIT[conn.beat, conn.heard]
            conn.heard = False
            if action is Action.PING:
                ping.append(conn)
            elif action is Action.DROP:
                drop.append(conn)
        for conn in drop:
            self.discard(conn)
        return ping, drop
