"""Liveness: readers that stop reading, SSE keep-alives, token expiry, connection caps.

Readers that stop reading are dropped (SSE and WebSocket, the join burst included), SSE keep-alives
that cannot be written drop the stream, token expiry ends SSE streams, and SSE connections per
client address are bounded.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.core.types import RoomName
from server.http.auth import mint_token
from server.http.keys import HUB

from .conftest import AUTH_SECRET, ServerFactory, viewer
from .fake_upstream import FakeUpstream, Script, text_stream
from .sse_viewer import SSEViewer

PIECES = [f"<{i:04d}>" + "z" * 4090 for i in range(160)]  # a ~650 kB snapshot
FULL = "".join(PIECES)
STALL = {
    "limits__outbox_bytes": 64 * 1024,
    "limits__send_buffer_bytes": 4096,
    "limits__close_timeout_seconds": 0.5,
}


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.fixture
async def tight() -> AsyncIterator[aiohttp.ClientSession]:
    """Sockets with a small receive buffer: a client that stops reading backs the server up."""
    connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


def sse_url(server: TestServer, room: str) -> str:
    """The room's SSE URL."""
    return str(server.make_url(f"/api/rooms/{room}/events"))


def _viewers(server: TestServer, room: str) -> int:
    return len(server.app[HUB].rooms[RoomName(room)].subscribers)


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll server-side state, which has no event to await, within ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _big_room(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession, room: str
) -> None:
    """A room whose snapshot is ~650 kB, ten times the outbox limit."""
    upstream.always(Script(chunks=text_stream(PIECES), gap=0, split=False))
    first = await viewer(session, server, room)
    resp = await session.post(server.make_url(f"/api/rooms/{room}/prompts"), json={"content": "x"})
    assert resp.status == 202
    await first.wait_turn_end()
    await first.close()


async def test_a_stalled_sse_reader_of_a_big_snapshot_is_dropped(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    tight: aiohttp.ClientSession,
) -> None:
    """An SSE reader stalled on its join burst is dropped; one that reads stays.

    An SSE reader that never reads its join burst is dropped once it sat past the outbox limit for
    close_timeout_seconds, in a room where nothing else happens; a reader that reads the same
    snapshot stays.
    """
    server = await make_server(**STALL)
    await _big_room(server, upstream, session, "big")
    stalled = await tight.get(sse_url(server, "big"))  # headers read, the body never
    reader = await SSEViewer(session, sse_url(server, "big")).connect()
    await _until(lambda: _viewers(server, "big") == 2)
    await _until(lambda: _viewers(server, "big") == 1)
    snapshot = next(f for f in reader.frames if f["type"] == "snapshot")
    assert snapshot["turns"][0]["choices"][0]["content"] == FULL
    assert reader._task is not None
    assert not reader._task.done()
    stalled.close()
    await reader.close()


async def test_a_stalled_websocket_reader_of_a_big_snapshot_is_dropped(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """The same rule on the WebSocket: its join burst counts once handed to the socket."""
    server = await make_server(**STALL)
    await _big_room(server, upstream, session, "bigws")
    # A raw handshake on a socket with a small receive buffer, then nothing is ever read
    # (aiohttp's own client would read a whole message, however big, into memory).
    sock = _small_receive_buffer((socket.AF_INET, socket.SOCK_STREAM, 0, "", ()))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET /api/rooms/bigws/ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    await _until(lambda: _viewers(server, "bigws") == 1)
    await _until(lambda: _viewers(server, "bigws") == 0)
    writer.close()


async def test_an_sse_keepalive_that_cannot_be_written_drops_the_stream(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    tight: aiohttp.ClientSession,
) -> None:
    """With no outbox limit at all, a reader that stops reading is still dropped.

    Its keep-alive cannot be written within server.sse_write_timeout_seconds.
    """
    server = await make_server(
        limits__outbox_bytes=0,
        limits__send_buffer_bytes=4096,
        server__sse_keepalive_seconds=0.1,
        server__sse_write_timeout_seconds=0.3,
    )
    await _big_room(server, upstream, session, "ka")
    stalled = await tight.get(sse_url(server, "ka"))
    reader = await SSEViewer(session, sse_url(server, "ka")).connect()
    await _until(lambda: _viewers(server, "ka") == 2)
    await _until(lambda: _viewers(server, "ka") == 1)
    await reader.wait(lambda v: v.comments >= 2, timeout=5)  # the reading one keeps its own
    stalled.close()
    await reader.close()


async def test_token_expiry_ends_an_sse_stream_with_unauthorized(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An SSE stream whose token expires gets ``unauthorized`` and ends.

    When its token expires an SSE stream gets an ``error`` event ``unauthorized`` and ends (the
    WebSocket's 4500).
    """
    server = await make_server(auth__mode="token")
    token = mint_token(AUTH_SECRET, "exp", "viewer", 1)
    sse = await SSEViewer(session, sse_url(server, "exp")).connect(f"?token={token}")
    assert sse._task is not None
    await asyncio.wait_for(asyncio.shield(sse._task), 5)  # the server ended the stream
    assert sse.frames[-1]["type"] == "error"
    assert sse.frames[-1]["code"] == "unauthorized"
    await sse.close()
    async with session.get(sse_url(server, "exp") + f"?token={token}") as resp:
        assert resp.status == 401  # and the same token cannot come back


async def test_sse_connections_are_bounded_per_client_address(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Past limits.max_connections_per_client an address gets 503 before the stream.

    Another address does not.
    """
    server = await make_server(limits__max_connections_per_client=2)
    mine = [await SSEViewer(session, sse_url(server, "c")).connect() for _ in range(2)]
    async with session.get(sse_url(server, "c")) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "unavailable"
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        theirs = await SSEViewer(other, sse_url(server, "c")).connect()
        assert theirs.frames[0]["viewers"] == 3
        await theirs.close()
    for v in mine:
        await v.close()
