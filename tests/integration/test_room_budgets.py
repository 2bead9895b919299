"""Rooms bounded by bytes: a huge answer neither breaks later prompts nor stays forever."""

from __future__ import annotations

import json

import aiohttp

from .conftest import ServerFactory, viewer
from .fake_upstream import FakeUpstream, Script, text_stream

BIG = 400_000  # characters of one answer: more than the default history budget (256 KiB)


async def test_a_huge_answer_does_not_make_later_prompts_too_long(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """After a 400 kB answer the next prompts go upstream within history_bytes and complete."""
    server = await make_server()
    watcher = await viewer(session, server, "big")
    answers = iter([["x" * 100_000] * (BIG // 100_000), ["short"], ["again"]])
    upstream.script_for = lambda _body: Script(chunks=text_stream(next(answers)), split=False)
    url = server.make_url("/api/rooms/big/prompts")
    for i in range(3):
        async with session.post(url, json={"content": f"prompt {i}"}) as response:
            assert response.status == 202, await response.text()
            turn = (await response.json())["turn"]
        ended = await watcher.wait_turn_end(turn)
        assert ended.end is not None
        assert ended.end["status"] == "completed"
    sizes = [len(json.dumps(r["messages"], ensure_ascii=False)) for r in upstream.requests]
    assert sizes[0] < 1_000
    # The 400 kB answer is too long for the history: later prompts go without it, whole.
    assert all(size < 256 * 1024 for size in sizes[1:])
    contents = [m["content"] for m in upstream.requests[2]["messages"]]
    assert "x" * BIG not in contents
    assert contents[-3:] == ["prompt 1", "short", "prompt 2"]
    assert len(ended.text()) == len("again")


async def test_a_prompt_over_the_history_budget_is_413(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A room prompt longer than history_bytes alone is refused with too_large."""
    server = await make_server(limits__max_prompt_chars=0, rooms__history_bytes=1000)
    url = server.make_url("/api/rooms/big/prompts")
    async with session.post(url, json={"content": "é" * 600}) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "too_large"
    async with session.post(url, json={"content": "fits"}) as response:
        assert response.status == 202


async def test_a_room_keeps_its_newest_turn_within_its_byte_budget(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Past max_room_bytes the oldest turns leave the snapshot; the newest one stays whole."""
    server = await make_server(rooms__max_room_bytes=150_000)
    watcher = await viewer(session, server, "kept")
    upstream.script_for = lambda _body: Script(chunks=text_stream(["y" * 50_000] * 2), split=False)
    url = server.make_url("/api/rooms/kept/prompts")
    for i in range(3):
        async with session.post(url, json={"content": f"p{i}"}) as response:
            turn = (await response.json())["turn"]
        await watcher.wait_turn_end(turn)
    async with session.get(server.make_url("/api/rooms/kept")) as response:
        snapshot = await response.json()
    assert [t["prompt"] for t in snapshot["turns"]] == ["p2"]
    assert snapshot["turns"][0]["choices"][0]["content"] == "y" * 100_000
    late = await viewer(session, server, "kept")
    assert late.turns[turn].text() == "y" * 100_000
