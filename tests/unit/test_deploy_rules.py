"""The pure parts of deployment.

Host names and the allowlist, budget refunds, the stall watch, and a room's answer to a prompt id it
knows.
"""

from __future__ import annotations

import pytest

from server.core.origins import HostAllowlist, host_name, split_host
from server.core.ratelimit import RateLimiter
from server.core.room import TurnStarted
from server.core.stall import StallWatch
from server.core.types import TurnId
from tests.unit.room_helpers import make_room, start


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Example.COM", ("example.com", None)),
        ("example.com.:8080", ("example.com", 8080)),
        ("[::1]:80", ("::1", 80)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("", None),
        ("evil@127.0.0.1", None),
        ("host/path", None),
        ("host?q", None),
        ("host#f", None),
        ("host:99999", None),
        ("host:port", None),
    ],
)
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    """A Host value is a lower-case name and an optional port; anything else is None."""
    assert split_host(value) == expected


@pytest.mark.parametrize(
    ("entry", "expected"),
    [("chat.example.com", "chat.example.com"), ("::1", "::1"), ("[fe80::1]", "fe80::1")]
    + [(bad, None) for bad in ("chat.example.com:443", "", "a b", "[::1]:80")],
)
def test_host_name(entry: str, expected: str | None) -> None:
    """Configured names: names and IP addresses (IPv6 bare or bracketed), never a port."""
    assert host_name(entry) == expected


@pytest.mark.parametrize(
    ("scheme", "host", "origin"),
    [
        ("http", "127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http", "127.9.9.9", "http://127.9.9.9"),
        ("http", "localhost:3000", "http://localhost:3000"),
        ("http", "[::1]:8080", "http://[::1]:8080"),
        ("https", "chat.example.com:443", "https://chat.example.com"),
        ("https", "CHAT.example.com.", "https://chat.example.com"),
        ("http", "10.0.0.5:8080", "http://10.0.0.5:8080"),
        ("http", "evil.example:8080", None),
        ("http", "chat.example.com.evil.example", None),
        ("http", "10.0.0.6", None),
        ("http", "0.0.0.0", None),
        ("http", "not a host", None),
        ("http", None, None),
    ],
)
def test_host_allowlist(scheme: str, host: str | None, origin: str | None) -> None:
    """Which hosts are allowed and make the server's own origin.

    Loopback names on any port, the listen address and configured names are allowed and make the
    server's own origin; others (and wildcard listen addresses) are not.
    """
    hosts = HostAllowlist(["0.0.0.0", "10.0.0.5", "chat.example.com", "bad:port"])
    assert hosts.own_origin(scheme, host) == origin
    assert hosts.allows(host) is (origin is not None)


def test_a_refund_gives_back_one_token_up_to_the_burst() -> None:
    """give_back returns what a replay spent; never more than the burst; unknown keys pass."""
    limiter = RateLimiter(per_minute=1, burst=1)
    assert limiter.take("a", 0.0) is None
    assert limiter.take("a", 0.0) is not None
    limiter.give_back("a")
    limiter.give_back("a")
    assert limiter.take("a", 0.0) is None
    assert limiter.take("a", 0.0) is not None
    limiter.give_back("nobody")


@pytest.mark.parametrize(
    ("looks", "dropped_at"),
    [
        # (time, queued, buffered, writes): stalled past the limit from the start
        ([(0.5, 0, 500, 0), (1.0, 0, 500, 0), (2.0, 0, 500, 0)], 2),
        # a slow reader: the buffer shrinks at every look
        ([(1.0, 0, 900, 0), (2.0, 0, 800, 0), (3.0, 0, 700, 0), (4.0, 0, 600, 0)], None),
        # writes complete: progress although the buffer is as full as before
        ([(1.0, 0, 500, 1), (2.0, 0, 500, 2), (3.0, 0, 500, 3)], None),
        # under the limit it is only quiet (the queue counts too)
        ([(1.0, 50, 40, 0), (3.0, 50, 40, 0), (5.0, 60, 50, 0)], 2),
        # progress, then stuck: the clock starts at the last progress
        ([(1.0, 0, 400, 0), (1.5, 0, 300, 0), (3.0, 0, 300, 0), (3.5, 0, 300, 0)], 3),
    ],
)
def test_stall_watch(looks: list[tuple[float, int, int, int]], dropped_at: int | None) -> None:
    """Dropped only after ``timeout`` seconds over the limit with no write and no shrink."""
    watch = StallWatch(limit=100, timeout=2.0, now=0.0)
    watch.restart(0.0, 0, 0)
    verdicts = [watch.stalled(t, queued=q, buffered=b, writes=w) for t, q, b, w in looks]
    expected = [i == dropped_at for i in range(len(looks))]
    assert verdicts == expected


def test_stall_watch_without_a_limit_never_drops() -> None:
    """limits.outbox_bytes = 0: never dropped here."""
    watch = StallWatch(limit=0, timeout=1.0, now=0.0)
    assert not watch.stalled(99.0, queued=10**9, buffered=10**9, writes=0)


def test_a_room_answers_a_prompt_id_it_knows() -> None:
    """prompt_turn finds the turn an id started (a replay) and nothing for others."""
    room = make_room()
    start(room, "t1", pid="p1")
    assert room.prompt_turn("p1") == TurnStarted(turn=TurnId("t1"), seq=1, event=None)
    assert room.prompt_turn("p2") is None
