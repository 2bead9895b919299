"""PresenceGate: a presence event on change, at most once per interval."""

from __future__ import annotations

import pytest

from server.core.messages import Presence
from server.core.presence import PresenceGate


def test_first_change_is_due_at_once() -> None:
    """The first change ever is flushed with no delay."""
    assert PresenceGate(interval=1.0).changed(now=100.0) == 0.0


def test_changes_while_scheduled_schedule_nothing_more() -> None:
    """While a flush is scheduled, more changes return None (they ride along)."""
    gate = PresenceGate()
    assert gate.changed(0.0) == 0.0
    assert gate.changed(0.1) is None
    assert gate.changed(0.2) is None
    assert gate.flush(0.3, viewers=4) == Presence(viewers=4)


def test_flush_with_unchanged_count_sends_nothing() -> None:
    """A flush whose count equals the last one sent returns None and reschedules freely."""
    gate = PresenceGate(interval=1.0)
    gate.changed(0.0)
    assert gate.flush(0.0, viewers=2) == Presence(viewers=2)
    assert gate.changed(0.5) == pytest.approx(0.5)
    assert gate.flush(1.0, viewers=2) is None
    # Nothing was sent at 1.0, so the interval still counts from 0.0.
    assert gate.changed(1.2) == 0.0
    assert gate.flush(1.2, viewers=3) == Presence(viewers=3)


@pytest.mark.parametrize(
    ("interval", "sent_at", "now", "delay"),
    [
        (1.0, 10.0, 10.25, 0.75),
        (1.0, 10.0, 10.0, 1.0),
        (1.0, 10.0, 11.0, 0.0),
        (1.0, 10.0, 15.0, 0.0),
        (2.5, 10.0, 11.0, 1.5),
        (0.0, 10.0, 10.0, 0.0),
    ],
)
def test_next_change_waits_out_the_interval(
    interval: float, sent_at: float, now: float, delay: float
) -> None:
    """After a presence went out, the next change waits the rest of the interval (never < 0)."""
    gate = PresenceGate(interval=interval)
    assert gate.changed(sent_at) == 0.0
    assert gate.flush(sent_at, viewers=1) == Presence(viewers=1)
    assert gate.changed(now) == pytest.approx(delay)


def test_first_flush_sends_even_zero() -> None:
    """The first flush sends whatever the count is, zero included."""
    gate = PresenceGate()
    gate.changed(0.0)
    assert gate.flush(0.0, viewers=0) == Presence(viewers=0)
    assert gate.interval == 1.0


def test_a_join_makes_the_next_flush_send_an_unchanged_count() -> None:
    """Join then leave within one interval still sends the count, for the newcomer's sake."""
    gate = PresenceGate(interval=1.0)
    gate.changed(0.0)
    assert gate.flush(0.0, viewers=1) == Presence(viewers=1)
    assert gate.changed(0.2, joined=True) == pytest.approx(0.8)
    assert gate.changed(0.4) is None  # the newcomer's neighbour leaves: back to 1
    assert gate.flush(1.0, viewers=1) == Presence(viewers=1)
    gate.changed(1.5)
    assert gate.flush(2.0, viewers=1) is None  # no join since: an unchanged count is news to no one
