"""The application factory: routes, state, background tasks and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from server.broker import make_broker
from server.broker.base import Broker
from server.config import Config
from server.core.clock import Alarms
from server.core.codes import CloseCode
from server.http import api, pages, sse, tap
from server.http.admission import PromptAdmission
from server.http.errors import json_errors
from server.http.guards import Budget, ConnectionCount, host_and_origin
from server.http.heartbeat import Heartbeat
from server.http.keys import (
    CONFIG,
    CONNECTIONS,
    HEARTBEAT,
    HUB,
    METRICS,
    PROMPTS,
    ROOM_BUDGET,
    SOCKETS,
    SSE_STREAMS,
    UPSTREAM,
)
from server.http.logs import quiet_parser_refusals
from server.http.proxies import trusted_proxies
from server.http.ws import websocket_handler
from server.rooms import gauges
from server.rooms.hub import Hub, HubLimits
from server.rooms.metrics import Metrics
from server.rooms.runner import TurnRunner
from server.upstream.client import OPENAI_BASE_URL, UpstreamClient

log = logging.getLogger(__name__)

SWEEP_SECONDS = 60.0


def create_app(
    config: Config, broker: Broker | None = None, *, heartbeat_alarms: Alarms | None = None
) -> web.Application:
    """Build the aiohttp application for ``config``.

    ``broker`` is used instead of broker.url's; ``heartbeat_alarms`` times the heartbeat
    instead of the event loop, for tests.
    """
    quiet_parser_refusals()
    # Outermost first: errors become JSON; then the client's address, scheme and host as a
    # trusted proxy reports them; then the Host allowlist and the Origin check.
    proxies = trusted_proxies(config.server.trusted_proxies, config.server.proxy_header)
    app = web.Application(
        middlewares=[
            json_errors,
            *([proxies] if proxies is not None else []),
            host_and_origin(config),
        ],
        client_max_size=1 << 20,
    )
    app[CONFIG] = config
    secrets = tuple(s.reveal() for s in (config.api_key, config.auth_secret) if s is not None)
    room_limits = config.rooms.room_limits()
    app[HUB] = Hub(
        room_limits,
        HubLimits.from_config(config.rooms),
        secrets,
        broker or make_broker(config.broker, room_limits),
    )
    app[SOCKETS] = set()
    app[SSE_STREAMS] = set()
    app[METRICS] = metrics = Metrics()
    app[HUB].metrics = metrics
    app[HUB].producer.upstream_api = config.upstream.api
    if config.upstream.background:
        app[HUB].producer.resume_in_background()
    gauges.watch(metrics, app[HUB], app[SOCKETS], app[SSE_STREAMS])
    limits = config.limits
    app[PROMPTS] = PromptAdmission(
        Budget(limits.prompts_per_minute, limits.prompt_burst, "prompts")
    )
    app[ROOM_BUDGET] = Budget(limits.rooms_per_minute, limits.room_burst, "new rooms")
    app[CONNECTIONS] = ConnectionCount(limits.max_connections_per_client)
    app[HEARTBEAT] = Heartbeat(config.server.heartbeat_seconds, heartbeat_alarms)
    app.router.add_routes(api.routes)
    app.router.add_routes(tap.routes)
    app.router.add_routes(sse.routes)
    app.router.add_get("/api/rooms/{room}/ws", websocket_handler)
    pages.setup_pages(app)
    app.cleanup_ctx.append(_broker_ctx)
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_sweeper_ctx)
    app.cleanup_ctx.append(_heartbeat_ctx)
    app.on_shutdown.append(_shutdown)
    return app


async def _broker_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connect the broker (and the hub's upkeep); disconnect after everything else."""
    hub = app[HUB]
    await hub.start()
    log.info("broker: %s", app[CONFIG].broker.url.split("@")[-1])  # never a password
    try:
        yield
    finally:
        await hub.stop()


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the upstream client (starting the mock first in demo mode); close both after."""
    config = app[CONFIG]
    mock_runner: web.AppRunner | None = None
    base_url = config.upstream.base_url or OPENAI_BASE_URL
    if config.demo:
        from server.tools.mock_upstream import MockSettings, start_mock_upstream  # demo mode only

        settings = MockSettings(
            tokens_per_second=config.upstream.demo_tokens_per_second,
            ttft=config.upstream.demo_ttft,
        )
        mock_runner, base_url = await start_mock_upstream("127.0.0.1", 0, settings)
        log.warning(
            "DEMO MODE: no OPENAI_API_KEY and no upstream URL; answers come from the built-in "
            "mock upstream at %s",
            base_url,
        )
    api_key = config.api_key.reveal() if config.api_key is not None else None
    upstream = UpstreamClient(config.upstream, base_url, api_key)
    app[UPSTREAM] = upstream
    app[HUB].attach_runner(TurnRunner(upstream, config.upstream.system_prompt, app[HUB].writes))
    log.info("upstream: %s (model %s)", upstream.base_url, config.upstream.model)
    try:
        yield
    finally:
        await app[HUB].close()
        await upstream.close()
        if mock_runner is not None:
            await mock_runner.cleanup()


async def _sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """Forget idle, empty rooms now and then (rooms nothing ever happened in, sooner)."""
    hub = app[HUB]
    idle = app[CONFIG].rooms.idle_forget_seconds
    empty = app[CONFIG].rooms.empty_forget_seconds or idle
    # Looking twice per horizon forgets a room at most half a horizon late.
    every = max(0.1, min(SWEEP_SECONDS, idle, empty) / 2)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(every)
            forgotten = hub.forget_idle(time.monotonic(), idle, empty)
            if forgotten:
                log.info("forgot %d idle room(s)", forgotten)

    task = asyncio.create_task(sweep(), name="room-sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
    """Ping silent WebSocket connections; drop those that do not answer."""
    async for _ in app[HEARTBEAT].context():
        yield


async def _shutdown(app: web.Application) -> None:
    """Graceful shutdown (SIGTERM), after the listening socket closed.

    End streaming turns for their viewers, then close every connection with 1001 after what is
    queued.

    aiohttp then waits up to ``server.shutdown_grace_seconds`` for the handlers to finish.
    """
    hub = app[HUB]
    await hub.close()  # each running turn ends (truncated) and its turn.end is queued
    for room in hub.rooms.values():
        room.rounds.flush()  # a large room's round: everything before the 1001
        for sub in tuple(room.subscribers):
            sub.close(CloseCode.GOING_AWAY, "server shutting down")
