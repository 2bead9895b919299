"""The room invariant of the fuzz suite: a room accepts a new viewer and completes a new prompt."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from yarl import URL

from server.tools.rebuild import Rebuild


async def _frame(ws: aiohttp.ClientWebSocketResponse, room: str) -> dict[str, Any]:
    msg = await ws.receive()
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise AssertionError(f"room {room!r}: viewer got {msg.type.name} {ws.close_code}")
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def assert_room_healthy(
    session: aiohttp.ClientSession, base: URL, room: str, tag: str, timeout: float = 5.0
) -> None:
    """Join ``room`` (welcome, then snapshot or replay), let any turn end, run a prompt to the end.

    Args:
        session: the client session.
        base: the server's root URL.
        room: a valid room name.
        tag: unique per call; names the prompt and its idempotency key.
        timeout: seconds for the whole check.

    Raises:
        AssertionError: the join failed, events had a gap, or the prompt did not complete.
    """
    content = f"health check {tag}"
    ref = f"health-{tag}"
    async with asyncio.timeout(timeout):
        try:
            ws = await session.ws_connect(base.join(URL(f"/api/rooms/{room}/ws")))
        except aiohttp.WSServerHandshakeError as exc:
            raise AssertionError(f"room {room!r}: join refused with {exc.status}") from exc
        async with ws:
            welcome = await _frame(ws, room)
            assert welcome["type"] == "welcome", f"room {room!r}: first frame {welcome}"
            assert welcome["room"] == room
            assert not welcome["recovered"], f"room {room!r}: {welcome}"
            snapshot = await _frame(ws, room)
            assert snapshot["type"] == "snapshot", f"room {room!r}: then {snapshot}"
            assert snapshot["seq"] == welcome["seq"], f"room {room!r}: {welcome} then {snapshot}"
            rebuilt = Rebuild()
            rebuilt.snapshot(snapshot)
            streaming = {t["id"] for t in snapshot["turns"] if t["status"] == "streaming"}
            sent = False
            mine: str | None = None
            attempts = 0
            while True:
                if not sent and not streaming:
                    await ws.send_json({"type": "prompt", "content": content, "id": ref})
                    sent = True
                    attempts += 1
                frame = await _frame(ws, room)
                kind = frame["type"]
                rebuilt.apply(frame)
                assert not rebuilt.problems, f"room {room!r}: {rebuilt.problems} at {frame}"
                if kind == "turn.start":
                    if frame["prompt"] == content:
                        mine = frame["turn"]
                    else:
                        streaming.add(frame["turn"])
                elif kind == "turn.end":
                    streaming.discard(frame["turn"])
                    if frame["turn"] == mine:
                        assert frame["status"] == "completed", f"room {room!r}: {frame}"
                        return
                elif kind == "error" and frame.get("ref") == ref:
                    # Someone else's turn got in first: wait for its end, then ask again.
                    assert frame.get("temporary"), f"room {room!r}: prompt refused: {frame}"
                    assert attempts < 5, f"room {room!r}: prompt refused {attempts} times"
                    sent = False
                    if not streaming:
                        await asyncio.sleep(0.05)
