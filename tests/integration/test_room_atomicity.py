"""A room is never left half-way: faults end the turn or close one subscriber, and the room goes on.

These inject a fault where nothing else can reach (an unexpected exception inside the server),
because the property is about what happens when something unexpected does: each test then
checks that the room takes a new viewer and completes a new prompt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from server.core.messages import SequencedEvent, TurnEnd
from server.core.room import RoomState
from server.core.types import RoomName
from server.http.keys import HUB
from server.rooms.room import Room
from server.rooms.subscriber import Subscriber
from server.rooms.turn_writes import TurnWrites

from .conftest import ServerFactory, viewer
from .fake_upstream import FakeUpstream, Script
from .fuzz_health import assert_room_healthy


class Boom(RuntimeError):
    """The injected fault."""


async def post_prompt(session: aiohttp.ClientSession, server: Any, room: str, text: str) -> str:
    """Start a turn through the HTTP API; return its id."""
    url = server.make_url(f"/api/rooms/{room}/prompts")
    async with session.post(url, json={"content": text}) as response:
        assert response.status == 202, await response.text()
        turn: str = (await response.json())["turn"]
        return turn


async def viewers_of(session: aiohttp.ClientSession, server: Any, room: str) -> int:
    """The room's viewer count as ``GET /api/rooms`` reports it."""
    async with session.get(server.make_url("/api/rooms")) as response:
        rooms = (await response.json())["rooms"]
    return next((r["viewers"] for r in rooms if r["name"] == room), 0)


async def test_a_join_that_fails_leaves_no_subscriber_behind(
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fault while building a joiner's snapshot closes it 1011 and it is not counted."""
    server = await make_server()
    original = RoomState.snapshot
    failures = 0

    def snapshot_once(self: RoomState) -> Any:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise Boom("snapshot")
        return original(self)

    monkeypatch.setattr(RoomState, "snapshot", snapshot_once)
    with caplog.at_level(logging.ERROR):
        ws = await session.ws_connect(server.make_url("/api/rooms/atom/ws"))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1011
    assert failures == 1
    assert await viewers_of(session, server, "atom") == 0
    await assert_room_healthy(session, server.make_url("/"), "atom", "after-join")


async def test_a_runner_that_raises_ends_its_turn_failed(
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected error while streaming ends the turn ``failed`` / ``internal_error``."""
    server = await make_server()
    watcher = await viewer(session, server, "atom")
    original = RoomState.feed_many
    raised = 0

    def feed_once(self: RoomState, *args: Any) -> list[SequencedEvent]:
        nonlocal raised
        if raised == 0:
            raised += 1
            raise Boom("feed")
        return original(self, *args)

    monkeypatch.setattr(RoomState, "feed_many", feed_once)
    turn = await post_prompt(session, server, "atom", "hello")
    ended = await watcher.wait_turn_end(turn)
    assert raised == 1
    assert ended.end is not None
    assert ended.end["status"] == "failed"
    assert ended.end["error"]["code"] == "internal_error"
    await assert_room_healthy(session, server.make_url("/"), "atom", "after-runner")
    assert not watcher.problems


async def test_a_turn_end_that_cannot_be_stored_does_not_hold_the_room(
    make_server: ServerFactory,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault while storing a turn's end gives the lease back; the turn still ends for all."""
    server = await make_server()
    watcher = await viewer(session, server, "atom")
    original = TurnWrites.commit
    refused = 0

    async def commit(
        self: TurnWrites, room: Room, events: Sequence[SequencedEvent], **kw: Any
    ) -> None:
        nonlocal refused
        if refused == 0 and isinstance(events[-1], TurnEnd):
            refused += 1
            raise Boom("commit")
        await original(self, room, events, **kw)

    monkeypatch.setattr(TurnWrites, "commit", commit)
    turn = await post_prompt(session, server, "atom", "hello")
    ended = await watcher.wait_turn_end(turn)
    assert refused == 1
    assert ended.end is not None
    assert ended.end["status"] == "truncated"
    await assert_room_healthy(session, server.make_url("/"), "atom", "after-commit")


async def test_a_fault_serving_one_subscriber_closes_it_alone(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A subscriber whose send raises is closed 1011; the other one gets the whole turn."""
    server = await make_server()
    upstream.always(Script(gap=0.01))
    doomed = await viewer(session, server, "atom")
    target = next(iter(server.app[HUB].rooms[RoomName("atom")].subscribers))
    healthy = await viewer(session, server, "atom")
    original = Subscriber.send

    def send(self: Subscriber, msg: Any, data: bytes) -> None:
        if self is target:
            raise Boom("send")
        original(self, msg, data)

    monkeypatch.setattr(Subscriber, "send", send)
    turn = await post_prompt(session, server, "atom", "hello")
    ended = await healthy.wait_turn_end(turn)
    assert ended.end is not None
    assert ended.end["status"] == "completed"
    await doomed.wait(lambda v: v.close_code is not None)
    assert doomed.close_code == 1011
    assert not healthy.problems
    await assert_room_healthy(session, server.make_url("/"), "atom", "after-send")
