"""Idle rooms are forgotten: the instance and the memory broker drop them."""

from __future__ import annotations

import asyncio

import aiohttp

from server.http.keys import HUB

from .conftest import ServerFactory, viewer


async def test_an_idle_room_is_forgotten_and_comes_back_on_a_new_epoch(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An empty, idle room leaves the hub and the memory store; using it again is a new epoch."""
    server = await make_server(rooms__idle_forget_seconds=0.5)
    first = await viewer(session, server, "brief")
    response = await session.post(
        server.make_url("/api/rooms/brief/prompts"), json={"content": "hi"}
    )
    await first.wait_turn_end((await response.json())["turn"])
    epoch, seq = first.epoch, first.seq
    await first.close()
    hub = server.app[HUB]
    for _ in range(100):  # the sweeper runs every second here (polled, bounded)
        if "brief" not in hub.rooms and not hub.broker.store.rooms:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.1)
    rooms = await (await session.get(server.make_url("/api/rooms"))).json()
    assert rooms == {"rooms": []}
    again = await viewer(session, server, "brief", f"?epoch={epoch}&since={seq}")
    welcome = again.frames[0]
    assert (welcome["recovered"], welcome["seq"]) == (False, 0)
    assert welcome["epoch"] != epoch
