"""Time as something handed in: the real monotonic clock, or a test's that moves when told.

Code that measures time (lease expiry, prompt-id memory) takes a ``Clock``; code that waits
(the heartbeat) takes ``Alarms``. An asyncio event loop is ``Alarms``; ``ManualClock`` is
both, and moves only when a test calls ``advance``, so tests of expiry need no sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Seconds on a monotonic scale (only differences mean anything)."""

    def __call__(self) -> float:
        """Now."""
        ...


class Cancellable(Protocol):
    """A pending alarm (an ``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Do not call back after all (nothing when it already did)."""
        ...


class Alarms(Protocol):
    """Calls back after a delay (an ``asyncio`` event loop is such a thing)."""

    def call_later(self, delay: float, callback: Callable[[], object], /) -> Cancellable:
        """Call ``callback`` once, ``delay`` seconds from now."""
        ...


monotonic: Clock = time.monotonic


class _Alarm:
    """One pending callback of a ``ManualClock``."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that stands still until ``advance`` moves it (for tests).

    Alarms fire inside ``advance``, in the order of their times, each with the clock set to
    its time; an alarm set by a callback fires in the same ``advance`` if it falls due.
    """

    def __init__(self, start: float = 1000.0) -> None:
        """A clock reading ``start``."""
        self.now = start
        self._alarms: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()  # alarms due at the same time fire in setting order

    def __call__(self) -> float:
        """The time the clock reads."""
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object], /) -> Cancellable:
        """Set an alarm that calls ``callback`` ``delay`` seconds from now (at once if <= 0)."""
        alarm = _Alarm(callback)
        heapq.heappush(self._alarms, (self.now + max(0.0, delay), next(self._order), alarm))
        return alarm

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, firing the alarms that fall due on the way.

        Raises:
            ValueError: ``seconds`` is negative (a monotonic clock never goes back).
        """
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        end = self.now + seconds
        while self._alarms and self._alarms[0][0] <= end:
            when, _, alarm = heapq.heappop(self._alarms)
            self.now = max(self.now, when)
            if not alarm.cancelled:
                alarm.callback()
        self.now = end

    @property
    def pending(self) -> int:
        """How many alarms have yet to fire (cancelled ones not counted)."""
        return sum(not alarm.cancelled for _, _, alarm in self._alarms)
