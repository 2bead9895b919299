"""Found by an attacker's review.

A cancel racing its runner, a tap caller that stops reading, repeated X-Forwarded-* lines, and a
client's own X-Forwarded-For behind an RFC 7239 proxy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.broker.memory import MemoryBroker, MemoryStore
from server.config import Secret, load_config

from .conftest import API_KEY, ServerFactory, viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, chunk, text_stream
from .room_health import assert_room_healthy


class SlowBroker(MemoryBroker):
    """The in-process broker with a network round trip on every append (as Redis has)."""

    delay = 0.2

    async def append(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(self.delay)
        await super().append(*args, **kwargs)


@pytest.fixture
async def slow_server(upstream: FakeUpstream) -> AsyncIterator[TestServer]:
    settings = {
        "upstream.base_url": upstream.base_url,
        "upstream.max_retries": 0,
        "upstream.idle_timeout": 5.0,
    }
    config = dataclasses.replace(load_config(None, {}, settings), api_key=Secret(API_KEY))
    rooms = config.rooms
    store = MemoryStore(
        rooms.retained_events,
        max(rooms.snapshot_turns, rooms.history_turns, 1),
        rooms.max_room_bytes,
    )
    server = TestServer(create_app(config, SlowBroker(store, "slow")), host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


async def test_cancel_while_the_runner_is_between_chunks_is_not_an_internal_error(
    slow_server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cancel whose turn.end is still being stored when the upstream's next bytes arrive.

    The runner sees the turn ended and returns; hub._turn_done still finds the fence held (the
    cancel's commit has not returned), logs ERROR "left unended by its runner" and _abandon releases
    the lease under the cancel, whose append is then Fenced.
    """
    upstream.always(Script(chunks=[chunk("Hello"), *text_stream(ANSWER)], gap=0.0, split=False))
    upstream.release.clear()  # one chunk, then the upstream waits
    v = await viewer(session, slow_server, "race")
    await v.send({"type": "prompt", "content": "hi", "id": "p1"})
    await v.wait(lambda x: any(f["type"] == "delta" for f in x.frames))
    start = next(f for f in v.frames if f["type"] == "turn.start")
    with caplog.at_level(logging.INFO):
        url = slow_server.make_url(f"/api/rooms/race/turns/{start['turn']}/cancel")

        async def cancel() -> tuple[int, Any]:
            async with session.post(url) as resp:
                return resp.status, await resp.json()

        cancelling = asyncio.create_task(cancel())
        await asyncio.sleep(SlowBroker.delay / 4)  # the cancel's turn.end is being stored
        upstream.release.set()  # the rest of the answer arrives meanwhile
        status, body = await asyncio.wait_for(cancelling, 10)
        assert status == 202, body  # the bug: 503 "the broker is unavailable"
        # A cancel's turn.end is immediate; the bug leaves the turn streaming until the
        # upkeep ends it as an orphan, a lease later (about 7 s here).
        end = await v.wait_turn_end(start["turn"], timeout=3.0)
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("server")
    ]
    await v.close()
    assert end.end is not None
    assert end.end["status"] == "cancelled", end.end
    assert errors == []
    await assert_room_healthy(session, slow_server, "race", upstream)


async def test_a_tap_caller_that_stops_reading_is_dropped(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A streaming tap caller that never reads.

    Once the socket is full the relay's response.write() waits for a drain that never comes. SSE
    drops such a reader after server.sse_write_timeout_seconds; the tap has no timeout, so its
    handler, its connection and the relay queue (the rest of the answer) are held forever, past the
    turn's end, and the tap is not counted against limits.max_connections_per_client.
    """
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    piece = "x" * 65_536
    upstream.always(Script(chunks=text_stream([piece] * 96), gap=0.0, split=False))  # 6 MiB
    server = await make_server(
        server__sse_write_timeout_seconds=1.0, limits__close_timeout_seconds=1.0
    )
    watcher = await viewer(session, server, "stall")
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    _reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Room: stall\r\n"
        b"User-Agent: stalled-tap-caller\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    try:
        turn = await watcher.wait_turn_end(timeout=15.0)
        assert turn.status == "completed"

        def tap_handler_returned() -> bool:  # aiohttp logs a request once its handler returns
            return any(
                r.name == "aiohttp.access" and "stalled-tap-caller" in r.getMessage()
                for r in caplog.records
            )

        # A server that drops a reader that stopped reading (as SSE does after its write
        # timeout) ends the tap's handler within a few seconds of the turn's end.
        async with asyncio.timeout(10.0):
            while not tap_handler_returned():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        writer.transport.abort()
        await watcher.close()


async def _raw_request(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(5.0):
            status_line = await reader.readline()
    finally:
        writer.close()
    return status_line


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"])
async def test_a_repeated_forwarded_header_is_not_an_error_log(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    """Repeated X-Forwarded-* lines from a trusted proxy are one list, not an ERROR.

    Behind a trusted proxy that appends its own header line (HAProxy's option forwardfor) or passes
    the client's X-Forwarded-Proto/-Host through, a client that sends one more makes two lines. They
    are one list (RFC 9110): the request is served, and nothing is logged at ERROR (aiohttp-remotes
    alone answers 400 and logs ERROR, one line per request anyone can send).
    """
    server = await make_server(server__trusted_proxies=["127.0.0.1"])
    values = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http"}
    values["X-Forwarded-Host"] = "127.0.0.1"
    extra = "".join(f"{h}: {v}\r\n" for h, v in values.items() if h != header)
    head = (
        "GET /api/rooms/fwd HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"{header}: {values[header]}\r\n{header}: {values[header]}\r\n{extra}"
        "Connection: close\r\n\r\n"
    ).encode()
    with caplog.at_level(logging.INFO):
        assert server.port is not None
        status_line = await _raw_request(server.port, head)
    assert status_line.startswith(b"HTTP/1.1 200"), status_line
    errors = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def test_behind_an_rfc7239_proxy_a_client_x_forwarded_for_is_not_believed(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Behind a Forwarded-only proxy, the client's own X-Forwarded-For is ignored.

    A trusted proxy that writes only RFC 7239 ``Forwarded`` (nginx with ``proxy_set_header
    Forwarded``, HAProxy's option forwarded) passes the client's own X-Forwarded-For through
    untouched. proxies.py prefers X-Forwarded-For whenever it is there, so the client picks its own
    address: a fresh room-creation budget, prompt budget and connection count per request.
    """
    server = await make_server(
        server__trusted_proxies=["127.0.0.1"],
        server__proxy_header="forwarded",
        limits__room_burst=1,
        limits__rooms_per_minute=1,
    )
    statuses = []
    for i in range(4):
        headers = {"Forwarded": "for=198.51.100.1", "X-Forwarded-For": f"10.0.0.{i + 1}"}
        async with session.get(server.make_url(f"/api/rooms/spoof{i}"), headers=headers) as r:
            statuses.append(r.status)
    # The proxy said the client is 198.51.100.1 every time: one new room, then 429s.
    assert statuses == [200, 429, 429, 429]
