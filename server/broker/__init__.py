"""Broker backends that carry room events between instances: ``memory://`` and ``redis://``."""

from __future__ import annotations

import os
import secrets
import socket

from server.config import BrokerConfig
from server.core.room_limits import RoomLimits

from .base import Broker
from .memory import MemoryBroker, MemoryStore


def instance_name() -> str:
    """A name for this process among the instances that share a broker."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def make_broker(config: BrokerConfig, limits: RoomLimits) -> Broker:
    """The backend ``broker.url`` names (validated by the config).

    It keeps what ``limits`` lets a room keep.
    """
    if config.url.startswith("memory://"):
        store = MemoryStore(limits.retained_events, limits.kept_turns, limits.max_bytes)
        return MemoryBroker(store, "local", config.lease_seconds)
    from .redis_broker import RedisBroker  # only instances that use Redis import redis-py

    return RedisBroker(
        config.url,
        instance_name(),
        prefix=config.key_prefix,
        lease_seconds=config.lease_seconds,
        max_events=limits.retained_events,
        max_turns=limits.kept_turns,
    )
