"""Broker backends that carry room events between instances: ``memory://`` and ``redis://``."""

from __future__ import annotations

import os
import secrets
import socket

from .base import Broker
from .memory import MemoryBroker, MemoryStore


def instance_name() -> str:
    """A name for this process among the instances that share a broker."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def make_broker(
    url: str,
    *,
    lease_seconds: float,
    key_prefix: str,
    max_events: int,
    max_turns: int,
    max_bytes: int = 0,
) -> Broker:
    """The backend ``url`` names (validated by the config)."""
    if url.startswith("memory://"):
        return MemoryBroker(MemoryStore(max_events, max_turns, max_bytes), "local", lease_seconds)
    from .redis_broker import RedisBroker  # only instances that use Redis import redis-py

    return RedisBroker(
        url,
        instance_name(),
        prefix=key_prefix,
        lease_seconds=lease_seconds,
        max_events=max_events,
        max_turns=max_turns,
    )
