"""The room invariant, for any test: after whatever happened, a room still works.

``assert_room_healthy`` joins the room as a NEW WebSocket viewer (welcome, then snapshot),
reads it over HTTP, and runs a fresh prompt to ``completed`` against the fake upstream, checking
that the text rebuilt from the deltas is the text of the snapshot.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from .conftest import viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream

_checks = itertools.count(1)


async def room_turn(
    session: aiohttp.ClientSession, server: TestServer, room: str, turn_id: str
) -> dict[str, Any]:
    """One turn of ``GET /api/rooms/{room}`` (the TURN object of the snapshot)."""
    resp = await session.get(server.make_url(f"/api/rooms/{room}"))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    turns = {t["id"]: t for t in body["turns"]}
    assert turn_id in turns, f"turn {turn_id} not in the snapshot of {room!r}"
    turn: dict[str, Any] = turns[turn_id]
    return turn


def snapshot_text(turn: dict[str, Any]) -> list[dict[str, Any]]:
    """A snapshot TURN's choices without their finish_reason.

    To compare with a viewer's rebuilt ``TurnText.choices()``.
    """
    return [{k: c[k] for k in c if k != "finish_reason"} for c in turn["choices"]]


async def assert_room_healthy(
    session: aiohttp.ClientSession,
    server: TestServer,
    room: str,
    upstream: FakeUpstream,
    *,
    timeout: float = 10.0,
) -> None:
    """Assert that ``room`` accepts a new viewer and completes a new prompt.

    Scripts ``upstream`` to answer every later request with a plain answer (``ANSWER``).

    Args:
        session: a client session.
        server: the fanout server the room lives on.
        room: the room's name.
        upstream: the fake upstream that server streams from.
        timeout: seconds for the whole check.

    Raises:
        AssertionError: the join failed or skipped a seq, the room could not be read, or the
            prompt did not complete with the upstream's text in both the deltas and the snapshot.
    """
    upstream.always(Script(chunks=text_stream(ANSWER), gap=0.0))
    prompt_id = f"health-{next(_checks)}"
    async with asyncio.timeout(timeout):
        v = await viewer(session, server, room)
        try:
            kinds = [f["type"] for f in v.frames[:2]]
            assert kinds == ["welcome", "snapshot"], v.frames[:2]
            await v.send({"type": "prompt", "content": "are you well?", "id": prompt_id})
            await v.wait(lambda x: any(f["type"] == "turn.start" for f in x.frames[2:]))
            start = next(f for f in v.frames[2:] if f["type"] == "turn.start")
            assert start["prompt"] == "are you well?", start
            turn = await v.wait_turn_end(start["turn"])
            assert turn.status == "completed", turn.end
            assert turn.text() == "".join(ANSWER)
            assert v.problems == [], v.problems
            assert v.errors == [], v.errors
            snap = await room_turn(session, server, room, start["turn"])
            assert snap["status"] == "completed"
            assert snapshot_text(snap) == turn.choices()
        finally:
            await v.close()
