"""A large room is served a slice of subscribers at a time: still exact, in order.

See ``server.rooms.rounds``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.core.messages import ChoiceDelta, Delta, ServerMessage
from server.core.room import RoomState
from server.core.room_limits import RoomLimits
from server.core.types import RoomName
from server.rooms import rounds
from server.rooms.room import Room

from .conftest import viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream

LONG = ANSWER * 20


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two subscribers per slice, so that a handful of viewers make a round of many slices."""
    monkeypatch.setattr(rounds, "SLICE", 2)


async def test_sliced_rounds_give_every_viewer_the_exact_text(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Viewers, a late joiner and a resumer rebuild the text exactly, with no gap or duplicate."""
    upstream.always(Script(chunks=text_stream(LONG), gap=0))
    viewers = [await viewer(session, server, "big") for _ in range(7)]
    await viewers[0].send({"type": "prompt", "content": "go", "id": "p-1"})
    await viewers[1].wait(lambda v: sum(f["type"] == "delta" for f in v.frames) >= 3)
    await viewers[2].close()
    late = await viewer(session, server, "big")
    await asyncio.sleep(0.02)
    await viewers[2].resume()
    for v in [*viewers, late]:
        turn = await v.wait_turn_end()
        assert turn.text() == "".join(LONG)
        assert turn.status == "completed"
        assert v.problems == []
    for v in [*viewers, late]:
        await v.close()


async def test_shutdown_delivers_the_turn_end_before_1001(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A round under way is finished before the shutdown closes: turn.end, then 1001."""
    upstream.always(Script(chunks=text_stream(LONG), gap=0.01, hang=True))
    viewers = [await viewer(session, server, "bye") for _ in range(5)]
    await viewers[0].send({"type": "prompt", "content": "go"})
    await viewers[4].wait(lambda v: any(f["type"] == "delta" for f in v.frames))
    await server.close()
    for v in viewers:
        turn = await v.wait_turn_end()
        assert turn.status == "truncated"
        await v.wait(lambda v: v.close_code is not None)
        assert v.close_code == 1001
        assert v.problems == []


class Recorder:
    """A subscriber that records what it is sent (the ring needs ``pos`` and ``send``)."""

    def __init__(self) -> None:
        self.pos = 0
        self.got: list[dict[str, Any]] = []

    def send(self, _msg: ServerMessage, data: bytes) -> None:
        self.got.append(json.loads(data))


def delta(seq: int, text: str) -> Delta:
    """A delta of turn t."""
    return Delta(seq=seq, turn="t", choices=(ChoiceDelta(0, content=text),))


async def test_what_arrives_mid_round_reaches_the_rest_merged_and_the_first_next() -> None:
    """Subscribers the round has passed get a new event in the next round.

    The others get it merged with what they were due, in this round.
    """
    room = Room(RoomState(RoomName("r"), "e", RoomLimits(), ()))
    subs = [Recorder() for _ in range(5)]
    room.subscribers.update(subs)  # type: ignore[arg-type]
    order = [s for s in room.subscribers if isinstance(s, Recorder)]
    assert len(order) == len(subs)
    room.publish((delta(1, "a"),))  # the first slice (two) is served at once
    assert [len(s.got) for s in order] == [1, 1, 0, 0, 0]
    room.publish((delta(2, "b"),))  # arrives before the round goes on
    for _ in range(20):
        await asyncio.sleep(0)
    first, rest = order[:2], order[2:]
    for s in first:
        assert [(f["seq"], f.get("first_seq")) for f in s.got] == [(1, None), (2, None)]
    for s in rest:
        assert [(f["seq"], f.get("first_seq")) for f in s.got] == [(2, 1)]
        assert s.got[0]["choices"] == [{"index": 0, "content": "ab"}]
    assert all(s.pos == 2 for s in subs)
