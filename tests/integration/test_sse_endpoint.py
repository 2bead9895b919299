"""GET /api/rooms/{room}/events: the same events as the WebSocket, as Server-Sent Events."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from .conftest import ServerFactory, viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream
from .sse_viewer import SSEViewer
from .viewer import delta_text, sequenced

FULL = "".join(ANSWER)


def sse_url(server: TestServer, room: str) -> str:
    """The room's SSE URL."""
    return str(server.make_url(f"/api/rooms/{room}/events"))


async def test_sse_viewer_rebuilds_what_a_websocket_viewer_rebuilds(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """SSE carries welcome, snapshot and every event with event: type and id: epoch:seq."""
    sse = await SSEViewer(session, sse_url(server, "s")).connect()
    assert sse.headers["Content-Type"].startswith("text/event-stream")
    assert sse.headers["X-Accel-Buffering"] == "no"
    assert "no-cache" in sse.headers["Cache-Control"]
    ws = await viewer(session, server, "s")
    await ws.send({"type": "prompt", "content": "hi"})
    sse_turn = await sse.wait_turn_end()
    ws_turn = await ws.wait_turn_end()
    assert sse_turn.text() == ws_turn.text() == FULL
    assert sse.problems == []
    assert sse.names[:2] == ["welcome", "snapshot"]
    assert sse.ids[:2] == [None, None]
    epoch = sse.epoch
    for frame, name, event_id in zip(sse.frames[2:], sse.names[2:], sse.ids[2:], strict=True):
        assert name == frame["type"]
        if "seq" in frame:
            assert event_id == f"{epoch}:{frame['seq']}"
    assert sse.frames[0]["role"] == "viewer"
    assert len(upstream.requests) == 1
    for v in (sse, ws):
        await v.close()


async def test_sse_resume_after_a_cut_has_no_gap_or_duplicate(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Cut mid-stream, reconnect with Last-Event-ID: recovered, exactly what it missed."""
    upstream.always(Script(chunks=text_stream(ANSWER * 3), gap=0.03))
    sse = await SSEViewer(session, sse_url(server, "cut")).connect()
    witness = await SSEViewer(session, sse_url(server, "cut")).connect()
    resp = await session.post(server.make_url("/api/rooms/cut/prompts"), json={"content": "x"})
    assert resp.status == 202
    await sse.wait(lambda v: sum(f["type"] == "delta" for f in v.frames) >= 3)
    await sse.close()
    left_at, seen = sse.seq, len(sse.frames)
    assert sse.last_event_id == f"{sse.epoch}:{left_at}"
    await witness.wait(lambda v: v.seq > left_at)  # deltas went by while it was away
    await sse.resume()
    for v in (sse, witness):
        turn = await v.wait_turn_end()
        assert turn.text() == "".join(ANSWER * 3)
        assert v.problems == []
    welcomes = [f for f in sse.frames if f["type"] == "welcome"]
    assert [w["recovered"] for w in welcomes] == [False, True]
    replayed = sequenced(sse.frames[seen:], 0)
    assert replayed[0].get("first_seq", replayed[0]["seq"]) == left_at + 1
    assert delta_text(replayed) == delta_text(sequenced(witness.frames, left_at))
    for v in (sse, witness):
        await v.close()


async def test_last_event_id_query_parameter_and_stale_ids(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """?last_event_id= resumes like the header; another epoch or a malformed id snapshots."""
    first = await SSEViewer(session, sse_url(server, "q")).connect()
    epoch = first.epoch
    await first.close()
    again = await SSEViewer(session, sse_url(server, "q")).connect(f"?last_event_id={epoch}:0")
    assert again.frames[0]["recovered"] is True
    await again.close()
    for stale in ("other:0", "garbage", f"{epoch}:99"):
        v = await SSEViewer(session, sse_url(server, "q")).connect(last_event_id=stale)
        assert v.frames[0]["recovered"] is False
        assert v.frames[1]["type"] == "snapshot"
        await v.close()


async def test_idle_stream_gets_keep_alive_comments(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An idle SSE stream receives comment lines so proxies keep it open."""
    server = await make_server(server__sse_keepalive_seconds=0.05)
    sse = await SSEViewer(session, sse_url(server, "idle")).connect()
    await sse.wait(lambda v: v.comments >= 2, timeout=5)
    await sse.close()


async def test_sse_is_counted_as_a_viewer_and_bad_rooms_are_refused(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """SSE subscribers count in presence; a bad room name is 400 before the stream starts."""
    sse = await SSEViewer(session, sse_url(server, "cnt")).connect()
    ws = await viewer(session, server, "cnt")
    assert ws.frames[0]["viewers"] == 2
    await sse.close()
    await ws.wait(lambda v: v.frames[-1] == {"type": "presence", "viewers": 1}, timeout=5)
    await ws.close()
    resp = await session.get(server.make_url("/api/rooms/-bad/events"))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"


async def test_sse_limits_are_503_before_the_stream(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Past subscribers per room or connections per client, SSE answers 503 up front."""
    server = await make_server(rooms__max_subscribers=1, limits__max_connections_per_client=2)
    first = await SSEViewer(session, sse_url(server, "full")).connect()
    resp = await session.get(server.make_url("/api/rooms/full/events"))
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "unavailable"
    second = await SSEViewer(session, sse_url(server, "other")).connect()
    resp = await session.get(server.make_url("/api/rooms/third/events"))
    assert resp.status == 503
    for v in (first, second):
        await v.close()
