"""Limits derived from the config in one place.

[rooms] becomes RoomLimits, HubLimits and the broker's bounds, every key reaching its limit.
"""

from __future__ import annotations

import dataclasses

import pytest

from server.broker import make_broker
from server.broker.memory import MemoryBroker
from server.config import BrokerConfig, RoomsConfig, load_config
from server.core.room_limits import RoomLimits
from server.rooms.hub import HubLimits

# Every [rooms] key that bounds a room, with a value no default has.
ROOMS = RoomsConfig(
    retained_events=11,
    snapshot_turns=7,
    history_turns=9,
    max_room_bytes=4096,
    history_bytes=512,
    max_rooms=3,
    max_subscribers=5,
)


def test_room_limits_come_from_the_rooms_section() -> None:
    """Each RoomLimits field is its [rooms] key's value, none left at its default."""
    limits = ROOMS.room_limits()
    assert limits == RoomLimits(
        retained_events=11, snapshot_turns=7, history_turns=9, max_bytes=4096, history_bytes=512
    )
    defaults = RoomLimits()
    for field in dataclasses.fields(RoomLimits):
        assert getattr(limits, field.name) != getattr(defaults, field.name), field.name


def test_hub_limits_come_from_the_rooms_section() -> None:
    """HubLimits carries [rooms] max_rooms and max_subscribers."""
    assert HubLimits.from_config(ROOMS) == HubLimits(max_rooms=3, max_subscribers=5)


@pytest.mark.parametrize(
    ("env", "attr", "expected"),
    [
        ({"FANOUT_ROOMS_RETAINED_EVENTS": "12"}, "retained_events", 12),
        ({"FANOUT_ROOMS_SNAPSHOT_TURNS": "3"}, "snapshot_turns", 3),
        ({"FANOUT_ROOMS_HISTORY_TURNS": "4"}, "history_turns", 4),
        ({"FANOUT_ROOMS_MAX_ROOM_BYTES": "1234"}, "max_bytes", 1234),
        ({"FANOUT_ROOMS_HISTORY_BYTES": "99"}, "history_bytes", 99),
    ],
)
def test_a_config_value_reaches_the_room_limit(
    env: dict[str, str], attr: str, expected: int
) -> None:
    """A value set in the environment is the room limit the server runs with."""
    assert getattr(load_config(None, env).rooms.room_limits(), attr) == expected


@pytest.mark.parametrize(
    ("snapshot", "history", "kept"),
    [(20, 10, 20), (2, 10, 10), (0, 0, 1), (1, 0, 1)],
)
def test_kept_turns_serve_the_snapshot_and_the_history(
    snapshot: int, history: int, kept: int
) -> None:
    """A room keeps enough ended turns for its snapshot and its history, one at least."""
    assert RoomLimits(snapshot_turns=snapshot, history_turns=history).kept_turns == kept


def test_the_memory_broker_keeps_what_the_room_limits_let_a_room_keep() -> None:
    """make_broker bounds its store by the room limits: events, kept turns, bytes."""
    broker = make_broker(BrokerConfig(lease_seconds=2.0), ROOMS.room_limits())
    assert isinstance(broker, MemoryBroker)
    store = broker.store
    assert (store.max_events, store.max_turns, store.max_bytes) == (11, 9, 4096)
    assert broker.lease_seconds == 2.0
