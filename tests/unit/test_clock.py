"""The manual clock the tests move: it reads what it was moved to, and fires alarms in order."""

from __future__ import annotations

import pytest

from server.core.clock import ManualClock


@pytest.mark.parametrize(
    ("alarms", "advance", "fired", "now"),
    [
        ([], 2.5, [], 1002.5),
        ([(1.0, "a")], 0.5, [], 1000.5),
        ([(1.0, "a")], 1.0, [("a", 1001.0)], 1001.0),
        ([(2.0, "b"), (1.0, "a")], 3.0, [("a", 1001.0), ("b", 1002.0)], 1003.0),
        ([(1.0, "first"), (1.0, "second")], 1.0, [("first", 1001.0), ("second", 1001.0)], 1001.0),
        ([(-1.0, "late")], 0.0, [("late", 1000.0)], 1000.0),
    ],
)
def test_alarms_fire_in_time_order_with_the_clock_at_their_time(
    alarms: list[tuple[float, str]], advance: float, fired: list[tuple[str, float]], now: float
) -> None:
    """Each alarm due within an advance fires once, in order, reading its own time."""
    clock = ManualClock()
    seen: list[tuple[str, float]] = []
    for delay, name in alarms:
        clock.call_later(delay, lambda name=name: seen.append((name, clock())))  # type: ignore[misc]
    clock.advance(advance)
    assert (seen, clock()) == (fired, now)
    assert clock.pending == len(alarms) - len(fired)


def test_a_cancelled_alarm_never_fires() -> None:
    """Cancelling takes an alarm out of the count and keeps it from firing."""
    clock = ManualClock()
    seen: list[str] = []
    alarm = clock.call_later(1.0, lambda: seen.append("x"))
    assert clock.pending == 1
    alarm.cancel()
    assert clock.pending == 0
    clock.advance(5.0)
    assert seen == []


def test_an_alarm_set_by_an_alarm_fires_in_the_same_advance_when_due() -> None:
    """A callback that sets the next alarm (a ticker) ticks at each of its times."""
    clock = ManualClock(start=0.0)
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(clock())
        clock.call_later(0.25, tick)

    clock.call_later(0.25, tick)
    clock.advance(1.0)
    assert ticks == [0.25, 0.5, 0.75, 1.0]
    assert clock.pending == 1


def test_the_clock_never_goes_back() -> None:
    """A negative advance is our misuse: refused, the clock unchanged."""
    clock = ManualClock()
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-0.1)
    assert clock() == 1000.0
