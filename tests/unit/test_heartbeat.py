"""The instance heartbeat's rules: who is pinged, who is dropped, and when (core.heartbeat)."""

from __future__ import annotations

import pytest

from server.core.heartbeat import VISIT, Action, Beat, HeartbeatWheel, Pulse, tick_seconds


@pytest.mark.parametrize(
    ("beat", "heard", "after", "action"),
    [
        (Beat.QUIET, True, Beat.QUIET, Action.NOTHING),
        (Beat.QUIET, False, Beat.SILENT, Action.NOTHING),
        (Beat.SILENT, True, Beat.QUIET, Action.NOTHING),
        (Beat.SILENT, False, Beat.PINGED, Action.PING),
        (Beat.PINGED, True, Beat.SILENT, Action.NOTHING),
        (Beat.PINGED, False, Beat.PINGED, Action.DROP),
    ],
)
def test_a_visit_follows_the_table(beat: Beat, heard: bool, after: Beat, action: Action) -> None:
    """Each (state, heard) pair has exactly the transition the module documents."""
    assert VISIT[beat, heard] == (after, action)


def half_intervals(wheel: HeartbeatWheel[Pulse], spokes: int, halves: int) -> list[str]:
    """Tick ``halves`` half intervals; what happened at the end of each one."""
    seen: list[str] = []
    for _ in range(halves):
        events: list[str] = []
        for _ in range(spokes):
            ping, drop = wheel.tick()
            events += ["ping"] * len(ping) + ["drop"] * len(drop)
        seen.append(",".join(events) or "-")
    return seen


def test_a_silent_connection_is_pinged_after_an_interval_then_dropped_half_one_later() -> None:
    """Silent from the start: pinged after a whole interval at least, dropped half one later."""
    wheel: HeartbeatWheel[Pulse] = HeartbeatWheel(spokes=4)
    conn = Pulse()
    wheel.add(conn)
    assert half_intervals(wheel, 4, 4) == ["-", "-", "ping", "drop"]
    assert len(wheel) == 0
    assert conn.spoke == -1
    assert half_intervals(wheel, 4, 2) == ["-", "-"]  # dropped ones are not visited again


def test_an_answered_ping_keeps_it_and_pings_come_once_an_interval() -> None:
    """A connection that answers each ping is pinged every other visit, and never dropped."""
    wheel: HeartbeatWheel[Pulse] = HeartbeatWheel(spokes=2)
    conn = Pulse()
    wheel.add(conn)
    seen = []
    for _ in range(8):
        [half] = half_intervals(wheel, 2, 1)
        seen.append(half)
        if half == "ping":
            conn.heard = True  # its pong
    assert seen == ["-", "-", "ping", "-", "ping", "-", "ping", "-"]
    assert len(wheel) == 1


def test_a_connection_that_talks_is_never_pinged() -> None:
    """Anything heard between visits counts: a chatty client gets no pings."""
    wheel: HeartbeatWheel[Pulse] = HeartbeatWheel(spokes=3)
    conn = Pulse()
    wheel.add(conn)
    for _ in range(6):
        conn.heard = True
        assert half_intervals(wheel, 3, 1) == ["-"]
    assert conn.beat is Beat.QUIET


def test_a_crowd_that_joins_at_once_is_pinged_spread_over_the_interval() -> None:
    """Connections that join together are dealt over the sets: their pings do not bunch."""
    wheel: HeartbeatWheel[Pulse] = HeartbeatWheel(spokes=4)
    conns = [Pulse() for _ in range(8)]
    for conn in conns:
        wheel.add(conn)
    pings_per_tick = [len(wheel.tick()[0]) for _ in range(12)]
    assert pings_per_tick == [0] * 8 + [2] * 4
    assert sorted(c.spoke for c in conns) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_discard_is_idempotent_and_forgets_the_connection() -> None:
    """A connection that left is neither pinged nor dropped, and discarding twice is harmless."""
    wheel: HeartbeatWheel[Pulse] = HeartbeatWheel(spokes=2)
    conn = Pulse()
    wheel.add(conn)
    others = [Pulse() for _ in range(3)]
    for other in others:
        wheel.add(other)
    assert sorted(map(id, wheel)) == sorted(map(id, [conn, *others]))
    wheel.discard(conn)
    wheel.discard(conn)
    assert sorted(map(id, wheel)) == sorted(map(id, others))
    for other in others:
        wheel.discard(other)
    assert len(wheel) == 0
    assert half_intervals(wheel, 2, 4) == ["-", "-", "-", "-"]


@pytest.mark.parametrize(
    ("interval", "spokes", "every"), [(30.0, 16, 0.9375), (0.2, 16, 0.00625), (1.0, 2, 0.25)]
)
def test_ticks_come_so_that_every_spoke_is_visited_once_per_half_interval(
    interval: float, spokes: int, every: float
) -> None:
    """``spokes`` ticks make half an interval."""
    assert tick_seconds(interval, spokes) == pytest.approx(every)
    assert tick_seconds(interval, spokes) * spokes == pytest.approx(interval / 2)
