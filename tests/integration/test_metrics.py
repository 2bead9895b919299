"""GET /metrics: Prometheus text with turns, upstream requests, connections and errors."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from .conftest import viewer
from .sse_viewer import SSEViewer


def value(text: str, name: str) -> float:
    """The value of one sample line of the exposition text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


async def test_metrics_follow_what_happened(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """Counters, histograms and live gauges move with turns, connections and errors."""
    ws = await viewer(session, server, "m")
    sse = await SSEViewer(session, str(server.make_url("/api/rooms/m/events"))).connect()
    await ws.send({"type": "prompt", "content": "hi"})
    await ws.wait_turn_end()
    await session.post(server.make_url("/api/rooms/m/prompts"), data=b"{")
    resp = await session.get(server.make_url("/metrics"))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert value(text, 'fanout_turns_total{status="completed"}') == 1
    assert value(text, "fanout_upstream_requests_total") == 1
    assert value(text, "fanout_upstream_ttft_seconds_count") == 1
    assert value(text, "fanout_publish_seconds_count") >= 3
    assert value(text, 'fanout_connections{transport="websocket"}') == 1
    assert value(text, 'fanout_connections{transport="sse"}') == 1
    assert value(text, "fanout_subscribers") == 2
    assert value(text, "fanout_rooms") == 1
    assert value(text, 'fanout_errors_total{code="bad_request"}') == 1
    assert value(text, "fanout_slow_consumer_closes_total") == 0
    for v in (ws, sse):
        await v.close()
