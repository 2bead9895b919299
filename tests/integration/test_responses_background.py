"""Background mode on one instance: positions kept as a turn streams; a cancel reaches upstream."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from server.broker.base import Record
from server.broker.memory import MemoryBroker, MemoryStore
from server.core.room import RoomState
from server.core.room_limits import RoomLimits
from server.core.types import RoomName, TurnId
from server.http.keys import HUB
from server.rooms.replicas import Replicas
from server.rooms.room import Room
from server.rooms.turn_writes import TurnWrites
from server.tools.mock_scenarios import answer_text

from .conftest import Mock, MockFactory, ServerFactory, viewer


@pytest.fixture
async def mock(start_mock: MockFactory) -> Mock:
    """The built-in mock upstream, paced so a turn can be cancelled midway."""
    return await start_mock(tokens_per_second=20.0, ttft=0.05)


async def test_cancelling_a_background_turn_cancels_the_upstream_response(
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
    mock: Mock,
) -> None:
    """The turn ends cancelled for viewers and the response stops upstream; the room goes on."""
    url, stats = mock.url, mock.stats
    server = await make_server(
        upstream__base_url=url, upstream__api="responses", upstream__background=True
    )
    a = await viewer(session, server, "bg")
    await a.send({"type": "prompt", "content": "a long story", "id": "p1"})
    await a.wait(lambda v: any(len(t.text()) > 10 for t in v.turns.values()))
    (turn,) = a.turns
    room = server.app[HUB].rooms["bg"]  # type: ignore[index]
    position = room.state.turns.position(TurnId(turn))
    assert position is not None  # kept as the turn streams
    assert position.response_id.startswith("resp_")
    assert stats.last_request is not None
    assert (stats.last_request["background"], stats.last_request["store"]) == (True, True)
    await a.send({"type": "cancel", "turn": turn})
    done = await a.wait_turn_end(turn)
    assert done.end is not None
    assert done.end["status"] == "cancelled"
    async with asyncio.timeout(10):
        while stats.responses_cancels == 0:  # noqa: ASYNC110 - it goes upstream after turn.end
            await asyncio.sleep(0.02)
    assert stats.responses_cancels == 1
    await a.send({"type": "prompt", "content": "next"})
    await a.wait(lambda v: len(v.turns) == 2)
    nxt = await a.wait_turn_end(next(t for t in a.turns if t != turn), timeout=20)
    assert nxt.text() == answer_text("next", 0)
    assert a.problems == []


@pytest.mark.parametrize(
    "stored",
    [
        b"\xff\xfe not json",
        b'{"turn":"t1","response_id":"\\ud800","after":"seven"}',
        b'{"turn":"another","response_id":"resp_1","after":7}',
        b"[" * 10_000,
    ],
)
async def test_an_unreadable_or_foreign_stored_position_is_no_position(
    stored: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes the broker hands back are checked: garbage, or another turn's, re-attach nothing."""
    broker = MemoryBroker(MemoryStore(), "a")
    writes = TurnWrites(broker, Replicas({}, broker, RoomLimits(), ()))
    room = Room(RoomState(RoomName("r"), (await broker.load(RoomName("r"), "e1")).epoch))
    claim = await broker.claim(room.state.name, room.state.epoch, 0, None)
    start = Record(1, b'{"type":"turn.start"}')
    await broker.append(room.state.name, "e1", claim.fence, [start], started=("t1", None))
    await broker.append(
        room.state.name, "e1", claim.fence, [Record(2, b'{"type":"delta"}')], position=stored
    )
    assert await writes.stored_position(room, "t1") is None
    assert "Traceback" not in caplog.text
