"""Fixtures: a real redis-server per test, plus the integration fixtures (fake upstream)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import make_server, session, start_mock, upstream

from .redis_server import RedisServer

__all__ = ["make_server", "session", "start_mock", "upstream"]

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server without persistence (a restart wipes it)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server with an append-only file (a restart keeps its data)."""
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    yield server
    server.stop(kill=True)
