"""Slow consumers.

A stalled reader is closed with 4000 and cut off, a slow one gets merged deltas, both rebuild the
exact text (after a resume), and the others never wait for them.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.core.codes import CloseCode
from server.core.types import RoomName
from server.http.keys import HUB
from server.rooms.subscriber import Subscriber

from .conftest import ServerFactory, viewer, ws_url
from .fake_upstream import FakeUpstream, Script, text_stream
from .viewer import Viewer

# Big deltas fill a small socket buffer in a fraction of a second.
PIECES = [f"<{i:04d}>" + "x" * 4090 for i in range(160)]
FULL = "".join(PIECES)
LIMIT = 64 * 1024
SLOW_SERVER = {
    "limits__outbox_bytes": LIMIT,
    "limits__send_buffer_bytes": 4096,
}


def _subscribers(server: TestServer, room: str) -> set[Subscriber]:
    return server.app[HUB].rooms[RoomName(room)].subscribers


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll server-side state, which has no event to await, within ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def _prompt(session: aiohttp.ClientSession, server: TestServer, room: str) -> str:
    resp = await session.post(server.make_url(f"/api/rooms/{room}/prompts"), json={"content": "go"})
    assert resp.status == 202
    return str((await resp.json())["turn"])


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.fixture
async def tight() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session whose sockets have a small receive buffer.

    So a reader that stops reading backs the server up at once (the kernel would otherwise absorb
    megabytes).
    """
    connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


def _paused(session: aiohttp.ClientSession, server: TestServer, room: str) -> Viewer:
    """A viewer that connects but reads nothing until ``_read_from_now`` is called."""
    return Viewer(session, ws_url(server, room))


async def _connect_paused(v: Viewer) -> None:
    # autoclose off: aiohttp's own close reply fails once the server has hung up after its
    # close frame, and it then reports 1006 instead of the code the server sent.
    v.ws = await v.session.ws_connect(v.url, autoclose=False)


def _read_from_now(v: Viewer) -> None:
    v._task = asyncio.create_task(v._read())


@pytest.fixture
def big_answer(upstream: FakeUpstream) -> None:
    """The fake upstream answers with ~650 kB in 160 deltas, as fast as it can."""
    upstream.always(Script(chunks=text_stream(PIECES), gap=0, split=False))


@pytest.mark.usefixtures("big_answer")
async def test_stalled_reader_is_closed_with_4000_and_cut_off_while_others_go_on(
    make_server: ServerFactory, session: aiohttp.ClientSession, tight: aiohttp.ClientSession
) -> None:
    """A reader that never reads is closed in bounded time; the others go on.

    A reader that never reads is closed (4000, then aborted) in bounded time, its backlog never past
    the limit; the other viewers rebuild the exact text meanwhile.
    """
    server = await make_server(**SLOW_SERVER, limits__close_timeout_seconds=0.3)
    a = await viewer(session, server, "stall")
    b = await viewer(session, server, "stall")
    stalled = _paused(tight, server, "stall")
    await _connect_paused(stalled)
    await _until(lambda: len(_subscribers(server, "stall")) == 3)
    subs = set(_subscribers(server, "stall"))
    turn = await _prompt(session, server, "stall")
    for v in (a, b):
        got = await v.wait_turn_end(turn)
        assert got.text() == FULL
        assert v.problems == []
    # The stalled one leaves the room by itself: closed, then aborted after 0.3 s.
    await _until(lambda: len(_subscribers(server, "stall")) == 2, timeout=5)
    [gone] = subs - _subscribers(server, "stall")
    assert gone.close_code == CloseCode.SLOW_CONSUMER
    assert 0 < gone.outbox.peak <= LIMIT
    assert (len(gone.outbox), gone.outbox.size) == (0, 0)
    # Reading now: whatever the kernel still held, then the end of the connection.
    assert stalled.ws is not None
    async with asyncio.timeout(5):
        while (msg := await stalled.ws.receive()).type == aiohttp.WSMsgType.TEXT:
            pass
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    for v in (a, b):
        await v.close()


@pytest.mark.usefixtures("big_answer")
async def test_slow_reader_gets_merged_deltas_and_the_exact_text(
    make_server: ServerFactory, session: aiohttp.ClientSession, tight: aiohttp.ClientSession
) -> None:
    """A reader that falls behind but within the limit gets first_seq frames, no gap, the text."""
    server = await make_server(limits__outbox_bytes=4 * 1024 * 1024, limits__send_buffer_bytes=4096)
    fast = await viewer(session, server, "slow")
    slow = _paused(tight, server, "slow")
    await _connect_paused(slow)
    await _until(lambda: len(_subscribers(server, "slow")) == 2)
    turn = await _prompt(session, server, "slow")
    await fast.wait_turn_end(turn)
    _read_from_now(slow)
    got = await slow.wait_turn_end(turn)
    assert got.text() == FULL
    assert slow.problems == []
    merged = [f for f in slow.frames if f["type"] == "delta" and "first_seq" in f]
    assert merged, "a reader that fell behind should get merged deltas"
    assert all(f["first_seq"] < f["seq"] for f in merged)
    deltas = [f for f in slow.frames if f["type"] == "delta"]
    assert len(deltas) < len(PIECES)
    assert not any("first_seq" in f for f in fast.frames)
    for v in (fast, slow):
        await v.close()


@pytest.mark.usefixtures("big_answer")
async def test_after_4000_a_resume_recovers_the_exact_text(
    make_server: ServerFactory, session: aiohttp.ClientSession, tight: aiohttp.ClientSession
) -> None:
    """A reader too far behind sees close 4000 when it reads again.

    Its resume is recovered (the replay is exempt from the limit) and ends with the exact text.
    """
    server = await make_server(**SLOW_SERVER, limits__close_timeout_seconds=10.0)
    fast = await viewer(session, server, "resume")
    slow = _paused(tight, server, "resume")
    await _connect_paused(slow)
    await _until(lambda: len(_subscribers(server, "resume")) == 2)
    subs = set(_subscribers(server, "resume"))
    turn = await _prompt(session, server, "resume")
    await fast.wait_turn_end(turn)
    await _until(lambda: any(s.close_code == CloseCode.SLOW_CONSUMER for s in subs))
    _read_from_now(slow)
    await slow.wait(lambda v: v.close_code is not None)
    assert slow.close_code == CloseCode.SLOW_CONSUMER
    assert slow.problems == []
    assert turn not in slow.turns or slow.turns[turn].end is None
    await slow.resume()
    await slow.wait(lambda v: sum(f["type"] == "welcome" for f in v.frames) == 2)
    welcome = [f for f in slow.frames if f["type"] == "welcome"][-1]
    assert welcome["recovered"] is True
    got = await slow.wait_turn_end(turn)
    assert got.text() == FULL
    assert got.status == "completed"
    assert slow.problems == []
    for v in (fast, slow):
        await v.close()


async def test_a_big_snapshot_does_not_count_against_the_limit(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    tight: aiohttp.ClientSession,
) -> None:
    """A join burst larger than the outbox limit does not get its viewer closed.

    A snapshot larger than the outbox limit, still stuck in the socket when live events come, does
    not get its viewer closed: the join burst is exempt from the limit.
    """
    upstream.always(Script(chunks=text_stream(PIECES), gap=0, split=False))
    server = await make_server(**SLOW_SERVER)
    first = await viewer(session, server, "big")
    turn = await _prompt(session, server, "big")
    await first.wait_turn_end(turn)
    late = _paused(tight, server, "big")
    await _connect_paused(late)
    await _until(lambda: len(_subscribers(server, "big")) == 2)
    [sub] = [s for s in _subscribers(server, "big") if s.outbox.sending_burst]
    upstream.always(Script(chunks=text_stream(["live", " events", " meanwhile"])))
    second = await _prompt(session, server, "big")
    await first.wait_turn_end(second)
    assert sub.close_code is None
    assert sub.outbox.peak <= LIMIT
    _read_from_now(late)
    assert (await late.wait_turn_end(second)).text() == "live events meanwhile"
    snapshot = next(f for f in late.frames if f["type"] == "snapshot")
    assert len(json.dumps(snapshot)) > LIMIT
    assert late.turns[turn].text() == FULL
    assert late.problems == []
    assert late.close_code is None
    for v in (first, late):
        await v.close()


async def test_a_coalescing_window_sends_fewer_frames_with_the_same_text(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """limits.coalesce_ms: deltas that come within the window share one merged frame."""
    pieces = [f"p{i} " for i in range(40)]
    upstream.always(Script(chunks=text_stream(pieces), gap=0.002, split=False))
    server = await make_server(limits__coalesce_ms=40.0)
    a = await viewer(session, server, "coalesce")
    turn = await _prompt(session, server, "coalesce")
    got = await a.wait_turn_end(turn)
    assert got.text() == "".join(pieces)
    assert a.problems == []
    deltas = [f for f in a.frames if f["type"] == "delta"]
    assert len(deltas) < len(pieces) / 2
    assert any("first_seq" in f for f in deltas)
    await a.close()
