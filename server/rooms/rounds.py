"""Fan-out rounds for a room, a slice of subscribers at a time.

One ``send()`` per subscriber per round is the cost of fanning out (the system call is nearly
all of it), so a round to thousands of viewers takes tens of milliseconds. Sent in one go, a
chunk that arrives just after a round started waits for that whole round, and then for its
own: up to two rounds. Here a round goes through the subscribers a slice at a time and lets
the event loop read the upstream between slices; what arrived by then goes to every
subscriber the round has not reached yet, merged with what they were due (``core.catchup``),
and the next round starts at once for those it had passed. So every subscriber gets a chunk
within one round of its arrival, for the same number of sends.

A room whose subscribers fit in one slice (most rooms) is served at once, inside
``Room.publish``, as before. Each subscriber's ``pos`` says how much of the room's pending
events it has been given; ``joining.attach`` sets it, with the welcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from server.core.catchup import Frame, catch_up

if TYPE_CHECKING:
    from server.rooms.subscriber import Subscriber

log = logging.getLogger(__name__)

# Subscribers served between two looks at the upstream: about 2.5 ms of sends on loopback.
SLICE = 256


class FanoutRounds:
    """Schedules a room's fan-out rounds.

    It holds the events some subscriber has not been sent yet, and the round under way.
    """

    __slots__ = ("_base", "_frames", "_log", "_name", "_next", "_order", "_start", "_subs", "_task")

    def __init__(self, name: str, subscribers: set[Subscriber]) -> None:
        self._name = name  # the room's, for log lines
        self._subs = subscribers  # the room's own set: who is subscribed now
        self._log: list[Frame] = []  # events from position _base on
        self._base = 0
        self._frames: dict[int, list[Frame]] = {}  # what a subscriber at a position gets
        self._order: list[Subscriber] = []  # the round under way
        self._next = 0  # the next subscriber of the round
        self._start = 0  # the end when the round began: every subscriber has that much
        self._task: asyncio.Task[None] | None = None

    @property
    def end(self) -> int:
        """The position after the last event: a subscriber that joins now starts here."""
        return self._base + len(self._log)

    def publish(self, frames: Iterable[Frame]) -> None:
        """Deliver encoded events now, or let the round under way take them along."""
        self._log.extend(frames)
        self._frames.clear()
        if self._task is None:
            self._order, self._next = list(self._subs), 0
            if self._step():
                self._task = asyncio.create_task(self._run(), name="fan-out round")

    def flush(self) -> None:
        """Deliver everything pending now, in one go (shutdown: before the 1001 closes)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        while self._step():
            pass

    async def _run(self) -> None:
        me = asyncio.current_task()
        try:
            while True:
                await asyncio.sleep(0)  # the upstream, joins and prompts get their turn
                if self._task is not me or not self._step():
                    return
        finally:
            if self._task is me:
                self._task = None

    def _step(self) -> bool:
        """Serve the next slice of the round; False once every subscriber has everything."""
        subscribers = self._subs
        end = self.end
        if self._next == 0:
            self._start = end
        stop = min(self._next + SLICE, len(self._order))
        for sub in self._order[self._next : stop]:
            if sub.pos < end and sub in subscribers:
                frames = self._frames.get(sub.pos)
                if frames is None:
                    frames = self._frames[sub.pos] = catch_up(self._log[sub.pos - self._base :])
                try:
                    for msg, data in frames:
                        sub.send(msg, data)
                except Exception:
                    log.exception("room %s: a subscriber could not be served", self._name)
                    sub.fail()
                sub.pos = end
        self._next = stop
        if stop < len(self._order):
            return True
        # The round is over. Every subscriber has what there was when it began (those that
        # joined since got it on joining): forget that. Go round again for what came since.
        del self._log[: self._start - self._base]
        self._base = self._start
        self._frames.clear()
        if not self._order or self.end == self._start:
            self._order, self._next = [], 0
            return False
        self._order, self._next = list(subscribers), 0
        return True
