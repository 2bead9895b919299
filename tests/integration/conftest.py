"""Fixtures: a scripted fake upstream and the fanout server, both real, on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import LooseHeaders

from server.app import create_app
from server.config import Secret, load_config
from server.core.clock import Alarms
from server.tools.mock_upstream import MOCK_STATS, MockSettings, MockStats, start_mock_upstream

from .fake_upstream import FakeUpstream
from .viewer import Viewer

API_KEY = "sk-test-secret-key-0123456789"
AUTH_SECRET = "test-auth-secret-that-is-long-enough-0123456789"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    """The fake upstream, listening."""
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.close()


ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def make_server(upstream: FakeUpstream) -> AsyncIterator[ServerFactory]:
    """Start fanout servers pointed at the fake upstream; settings as ``section.key`` kwargs."""
    servers: list[TestServer] = []

    async def start(*, heartbeat_alarms: Alarms | None = None, **overrides: Any) -> TestServer:
        settings = {
            "upstream.base_url": upstream.base_url,
            "upstream.max_retries": 0,
            "upstream.idle_timeout": 5.0,
        }
        settings.update({k.replace("__", "."): v for k, v in overrides.items()})
        env = {"FANOUT_AUTH_SECRET": AUTH_SECRET} if settings.get("auth.mode") == "token" else {}
        config = load_config(None, env, settings)
        config = dataclasses.replace(config, api_key=Secret(API_KEY))
        app = create_app(config, heartbeat_alarms=heartbeat_alarms)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def server(make_server: ServerFactory) -> TestServer:
    """One fanout server with default settings."""
    return await make_server()


def ws_url(server: TestServer, room: str) -> str:
    """The room's WebSocket URL."""
    return str(server.make_url(f"/api/rooms/{room}/ws"))


async def viewer(
    session: aiohttp.ClientSession, server: TestServer, room: str, query: str = ""
) -> Viewer:
    """A connected viewer."""
    return await Viewer(session, ws_url(server, room)).connect(query)


# --- clients from other loopback addresses (other clients, a proxy) ---------------------------

PROXY = "127.0.0.9"  # the address a test's trusted reverse proxy connects from
Sessions = Callable[[str], aiohttp.ClientSession]


@pytest.fixture
async def from_address() -> AsyncIterator[Sessions]:
    """Client sessions whose connections come from a given loopback address."""
    made: list[aiohttp.ClientSession] = []

    def make(address: str) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True, limit=0)
        s = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15))
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


async def post_prompt(
    session: aiohttp.ClientSession,
    server: TestServer,
    room: str,
    headers: LooseHeaders | None = None,
    **body: Any,
) -> tuple[int, dict[str, Any]]:
    """POST a prompt (``content`` "hi" unless given); its status and JSON body."""
    body.setdefault("content", "hi")
    url = server.make_url(f"/api/rooms/{room}/prompts")
    async with session.post(url, json=body, headers=headers or {}) as resp:
        return resp.status, await resp.json()


# --- the built-in mock upstream ---------------------------------------------------------------


@dataclass
class Mock:
    """A running mock upstream: its base URL and what it saw."""

    url: str
    stats: MockStats


MockFactory = Callable[..., Awaitable[Mock]]


@pytest.fixture
async def start_mock() -> AsyncIterator[MockFactory]:
    """Start mock upstreams on 127.0.0.1 port 0; MockSettings fields as kwargs (fast defaults)."""
    runners = []

    async def start(**overrides: Any) -> Mock:
        settings = MockSettings(**{"tokens_per_second": 0.0, "ttft": 0.0, **overrides})
        runner, url = await start_mock_upstream("127.0.0.1", 0, settings)
        runners.append(runner)
        return Mock(url, runner.app[MOCK_STATS])

    yield start
    for runner in runners:
        await runner.cleanup()


def sdk(url: str, api_key: str = "x") -> openai.AsyncOpenAI:
    """An SDK client on the aiohttp transport, without retries."""
    return openai.AsyncOpenAI(
        base_url=url, api_key=api_key, max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
