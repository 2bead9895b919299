"""WebSocket guards: tokens and roles, cross-site hijacking, limits, prompt floods, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from server.core.clock import ManualClock
from server.core.heartbeat import SPOKES, Beat, Pulse, tick_seconds
from server.core.types import RoomName
from server.http.auth import mint_token
from server.http.keys import HEARTBEAT, HUB

from .conftest import AUTH_SECRET, ServerFactory, viewer, ws_url
from .fake_upstream import FakeUpstream


def token(room: str = "r", role: str = "publisher", ttl: float = 60) -> str:
    """A token signed with the test servers' secret."""
    return mint_token(AUTH_SECRET, room, role, ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "status"),
    [("", 401), ("?token=garbage", 401), (f"?token={token(room='other', ttl=86400)}", 403)],
)
async def test_bad_tokens_are_refused_before_the_upgrade(
    make_server: ServerFactory, session: aiohttp.ClientSession, query: str, status: int
) -> None:
    """No token or a bad one: 401; a token for another room: 403; no socket is opened."""
    server = await make_server(auth__mode="token")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(ws_url(server, "r") + query)
    assert refused.value.status == status


async def test_cross_site_websocket_hijacking_is_refused(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A browser page on another origin cannot open the room's socket (403)."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(ws_url(server, "r"), headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    own = str(server.make_url("/")).rstrip("/")
    ws = await session.ws_connect(ws_url(server, "r"), headers={"Origin": own})
    assert (await ws.receive_json())["type"] == "welcome"
    await ws.close()


async def test_viewer_token_watches_but_may_not_prompt(
    make_server: ServerFactory, session: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    """A viewer's welcome says viewer; its prompt and cancel get forbidden error frames."""
    server = await make_server(auth__mode="token")
    v = await viewer(session, server, "r", f"?token={token(role='viewer')}")
    assert v.frames[0]["role"] == "viewer"
    await v.send({"type": "prompt", "content": "hi", "id": "p1"})
    await v.send({"type": "cancel", "turn": "t1", "id": "c1"})
    await v.wait(lambda x: len(x.errors) == 2)
    assert [(e["code"], e["ref"]) for e in v.errors] == [("forbidden", "p1"), ("forbidden", "c1")]
    assert upstream.requests == []
    p = await viewer(session, server, "r", f"?token={token(role='publisher')}")
    assert p.frames[0]["role"] == "publisher"
    await p.send({"type": "prompt", "content": "hi"})
    await p.wait_turn_end()
    for x in (v, p):
        await x.close()


async def test_an_expiring_token_closes_the_live_connection_with_4500(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """The connection is closed with 4500 when its token expires."""
    server = await make_server(auth__mode="token")
    ws = await session.ws_connect(ws_url(server, "r") + f"?token={token(ttl=1)}", autoclose=False)
    async with asyncio.timeout(5):
        while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 4500
    await ws.close()


@pytest.mark.usefixtures("upstream")
async def test_prompt_floods_are_rate_limited_then_closed_with_4001(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Past the burst, prompts get rate_limited with retry_after_ms; a flood closes with 4001."""
    server = await make_server(limits__prompt_burst=2, limits__max_rate_limited_frames=3)
    ws = await session.ws_connect(ws_url(server, "r"), autoclose=False)
    for i in range(6):
        await ws.send_json({"type": "prompt", "content": "hi", "id": f"p{i}"})
    errors, close = [], None
    async with asyncio.timeout(5):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                close = msg.data
                break
            frame = msg.json()
            if frame["type"] == "error":
                errors.append(frame)
    codes = [(e["code"], e["ref"]) for e in errors]
    assert ("rate_limited", "p2") in codes
    limited = [e for e in errors if e["code"] == "rate_limited"]
    assert len(limited) == 3
    assert all(e["temporary"] and e["retry_after_ms"] > 0 for e in limited)
    assert close == 4001
    await ws.close()


async def test_connection_and_subscriber_limits_close_with_4503(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Past connections per client or subscribers per room, the socket closes with 4503."""
    server = await make_server(limits__max_connections_per_client=1)
    first = await session.ws_connect(ws_url(server, "a"))
    second = await session.ws_connect(ws_url(server, "b"), autoclose=False)
    msg = await asyncio.wait_for(second.receive(), 5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4503)
    for ws in (first, second):
        await ws.close()
    full = await make_server(rooms__max_subscribers=1)
    one = await session.ws_connect(ws_url(full, "a"))
    two = await session.ws_connect(ws_url(full, "a"), autoclose=False)
    msg = await asyncio.wait_for(two.receive(), 5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4503)
    for ws in (one, two):
        await ws.close()


HEARTBEAT_SECONDS = 0.2
TICKS_PER_INTERVAL = 2 * SPOKES  # the wheel visits every connection once per half interval


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the server's tasks run until ``check`` holds (server state with no event to await)."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def tick(clock: ManualClock) -> None:
    """Move the heartbeat's clock to its next tick and wait until that tick has run."""
    await until(lambda: clock.pending == 1)  # the heartbeat waits for its next tick
    clock.advance(tick_seconds(HEARTBEAT_SECONDS))
    await until(lambda: clock.pending == 1)  # it ticked and waits for the next one


def watched(server: TestServer) -> list[Pulse]:
    """The connections the server's heartbeat watches."""
    return list(server.app[HEARTBEAT].wheel)


async def test_a_silent_client_is_dropped_by_the_heartbeat(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A client that never answers pings is pinged, then closed, and stops counting.

    It is pinged after an interval, closed half one later, and is no longer a viewer.
    """
    clock = ManualClock()
    server = await make_server(server__heartbeat_seconds=HEARTBEAT_SECONDS, heartbeat_alarms=clock)
    silent = await session.ws_connect(ws_url(server, "hb"), autoping=False)
    rooms_url = server.make_url("/api/rooms")

    async def viewers() -> int:
        async with session.get(rooms_url) as resp:
            rooms = (await resp.json())["rooms"]
        return int(rooms[0]["viewers"]) if rooms else 0

    assert await viewers() == 1
    await until(lambda: len(watched(server)) == 1)
    pinged_at = dropped_at = 0
    for n in range(1, 3 * TICKS_PER_INTERVAL):
        await tick(clock)
        conns = watched(server)
        if not pinged_at and conns and conns[0].beat is Beat.PINGED:
            pinged_at = n
        if not conns:
            dropped_at = n
            break
    assert TICKS_PER_INTERVAL <= pinged_at <= 3 * TICKS_PER_INTERVAL // 2, pinged_at
    assert dropped_at == pinged_at + TICKS_PER_INTERVAL // 2, (pinged_at, dropped_at)
    kinds = []
    async with asyncio.timeout(5):
        while (msg := await silent.receive()).type not in (WSMsgType.CLOSED, WSMsgType.ERROR):
            kinds.append(msg.type)
    assert WSMsgType.PING in kinds
    await until(lambda: not server.app[HUB].rooms[RoomName("hb")].subscribers)
    assert await viewers() == 0
    await silent.close()


async def test_a_client_that_answers_pings_stays_and_its_pings_get_pongs(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Pongs keep a quiet client connected through many ping intervals.

    Its own pings are answered with the same payload.
    """
    clock = ManualClock()
    server = await make_server(server__heartbeat_seconds=HEARTBEAT_SECONDS, heartbeat_alarms=clock)
    quiet = await session.ws_connect(ws_url(server, "hb2"))  # answers pings by itself
    pinger = await session.ws_connect(ws_url(server, "hb2"), autoping=False)
    await pinger.ping(b"are you there")
    while (msg := await asyncio.wait_for(pinger.receive(), 5)).type != aiohttp.WSMsgType.PONG:
        if msg.type == aiohttp.WSMsgType.PING:
            await pinger.pong(msg.data)
    assert msg.data == b"are you there"
    await pinger.close()

    async def read_all() -> None:  # the client answers pings while it reads
        async for _ in quiet:
            pass

    reading = asyncio.create_task(read_all())
    await until(lambda: len(watched(server)) == 1)
    (conn,) = watched(server)
    answered = 0
    for _ in range(5 * TICKS_PER_INTERVAL):  # five ping intervals
        await tick(clock)
        if conn.beat is Beat.PINGED and not conn.heard:  # this tick pinged it
            await until(lambda: conn.heard)  # its pong reached the server
            answered += 1
    assert answered >= 4  # an idle viewer is pinged once per interval
    assert not reading.done()
    assert watched(server) == [conn]
    async with session.get(server.make_url("/api/rooms")) as resp:
        rooms = (await resp.json())["rooms"]
    assert [r["viewers"] for r in rooms if r["name"] == "hb2"] == [1]
    await quiet.close()
    await asyncio.wait_for(reading, 5)
