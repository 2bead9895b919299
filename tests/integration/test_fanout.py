"""One upstream stream per prompt, fanned out to every viewer, late joiners and resumers."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from .conftest import viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream
from .viewer import delta_text, sequenced

FULL = "".join(ANSWER)


async def test_two_viewers_late_joiner_and_resumer_rebuild_the_same_text(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Two viewers, a late joiner and a resuming viewer all rebuild the upstream text once."""
    upstream.always(Script(chunks=text_stream(ANSWER), gap=0.03))
    a = await viewer(session, server, "demo")
    b = await viewer(session, server, "demo")
    resumer = await viewer(session, server, "demo")
    await a.send({"type": "prompt", "content": "Say hello", "id": "p-1"})
    await a.wait(lambda v: any(f["type"] == "delta" for f in v.frames))
    await resumer.close()
    left_at, seen = resumer.seq, len(resumer.frames)
    late = await viewer(session, server, "demo")
    await a.wait(lambda v: v.seq > left_at)  # deltas went by while the resumer was away
    await resumer.resume()
    for v in (a, b, late, resumer):
        turn = await v.wait_turn_end()
        assert turn.text() == FULL
        assert turn.status == "completed"
        assert v.problems == []
    welcome, *replayed = resumer.frames[seen:]
    assert welcome["type"] == "welcome"
    assert welcome["recovered"] is True
    assert all(f["type"] != "snapshot" for f in replayed)
    # Exactly what was missed: from the seq after the one it left at, the text a saw since.
    stream = sequenced(replayed, 0)
    assert stream[0].get("first_seq", stream[0]["seq"]) == left_at + 1
    assert delta_text(stream) == delta_text(sequenced(a.frames, left_at))
    assert len(upstream.requests) == 1
    for v in (a, b, late, resumer):
        await v.close()


async def test_post_prompt_returns_202_and_viewers_see_the_turn(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """POST .../prompts answers 202 with the turn and its turn.start seq; viewers see it."""
    a = await viewer(session, server, "post")
    resp = await session.post(
        server.make_url("/api/rooms/post/prompts"),
        json={"content": "hello", "options": {"temperature": 0.2}},
    )
    assert resp.status == 202
    body = await resp.json()
    turn = await a.wait_turn_end(body["turn"])
    start = next(f for f in a.frames if f["type"] == "turn.start")
    assert start["seq"] == body["seq"]
    assert start["model"] == "gpt-4o-mini"
    assert turn.text() == FULL
    assert upstream.requests[0]["temperature"] == 0.2
    # The server reads the body to its end after [DONE]: no disconnect, the connection reusable.
    await asyncio.wait_for(upstream.finished.wait(), 5)
    assert upstream.disconnects == 0
    await a.close()


async def test_cancel_closes_the_upstream_connection(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Cancel ends the turn as cancelled for everyone and really closes the upstream request."""
    upstream.always(Script(chunks=text_stream(ANSWER * 50), gap=0.02))
    a = await viewer(session, server, "cancel")
    b = await viewer(session, server, "cancel")
    await a.send({"type": "prompt", "content": "long one"})
    await b.wait(lambda v: any(f["type"] == "delta" for f in v.frames))
    turn_id = next(f["turn"] for f in b.frames if f["type"] == "turn.start")
    await b.send({"type": "cancel", "turn": turn_id, "id": "c-1"})
    for v in (a, b):
        turn = await v.wait_turn_end(turn_id)
        assert turn.status == "cancelled"
        assert v.problems == []
    await asyncio.wait_for(upstream.disconnected.wait(), 5)
    assert upstream.completed == 0
    # The room goes on: the next prompt streams normally.
    upstream.always(Script())
    await a.send({"type": "prompt", "content": "again"})
    await a.wait(lambda v: len(v.turns) == 2 and all(t.end for t in v.turns.values()))
    assert list(a.turns.values())[-1].text() == FULL
    resp = await session.post(server.make_url(f"/api/rooms/cancel/turns/{turn_id}/cancel"))
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "turn_ended"
    for v in (a, b):
        await v.close()


async def test_cancel_over_http(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """POST .../turns/{turn}/cancel answers 202 and the viewers see turn.end cancelled."""
    upstream.always(Script(chunks=text_stream(ANSWER * 50), gap=0.02))
    a = await viewer(session, server, "hc")
    resp = await session.post(server.make_url("/api/rooms/hc/prompts"), json={"content": "x"})
    turn_id = (await resp.json())["turn"]
    await a.wait(lambda v: any(f["type"] == "delta" for f in v.frames))
    resp = await session.post(server.make_url(f"/api/rooms/hc/turns/{turn_id}/cancel"))
    assert resp.status == 202
    assert (await resp.json()) == {"turn": turn_id}
    assert (await a.wait_turn_end(turn_id)).status == "cancelled"
    await a.close()


async def test_concurrent_prompts_start_one_turn(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Prompts sent at once from several viewers start one turn; the others get turn_in_progress."""
    viewers = [await viewer(session, server, "race") for _ in range(4)]
    await asyncio.gather(
        *(
            v.send({"type": "prompt", "content": f"q{i}", "id": f"p{i}"})
            for i, v in enumerate(viewers)
        )
    )
    for v in viewers:
        await v.wait_turn_end()
    errors = [e for v in viewers for e in v.errors]
    assert len(errors) == 3
    assert {e["code"] for e in errors} == {"turn_in_progress"}
    assert all(e["temporary"] is True and e["ref"].startswith("p") for e in errors)
    assert len(upstream.requests) == 1
    texts = {next(iter(v.turns.values())).text() for v in viewers}
    assert texts == {FULL}
    for v in viewers:
        await v.close()


async def test_same_prompt_id_starts_no_second_stream(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A repeated prompt id (WebSocket or POST) returns the same turn and one upstream stream."""
    a = await viewer(session, server, "idem")
    url = server.make_url("/api/rooms/idem/prompts")
    first = await (await session.post(url, json={"content": "hi", "id": "k-1"})).json()
    await a.send({"type": "prompt", "content": "hi", "id": "k-1"})
    await a.wait_turn_end(first["turn"])
    again = await session.post(url, json={"content": "hi", "id": "k-1"})
    assert again.status == 202
    assert await again.json() == first
    await a.send({"type": "prompt", "content": "hi", "id": "k-1"})
    await asyncio.sleep(0.1)
    assert len(upstream.requests) == 1
    assert a.errors == []
    assert len(a.turns) == 1
    await a.close()


@pytest.mark.usefixtures("upstream")
async def test_resume_after_the_log_is_gone_gets_a_snapshot(
    make_server: object, session: aiohttp.ClientSession
) -> None:
    """A resume from before the retained log falls back to recovered:false and a snapshot."""
    server = await make_server(rooms__retained_events=4)  # type: ignore[operator]
    a = await viewer(session, server, "short")
    epoch = a.epoch
    await a.send({"type": "prompt", "content": "hi"})
    await a.wait_turn_end()
    b = await viewer(session, server, "short", f"?epoch={epoch}&since=0")
    welcome = b.frames[0]
    assert welcome["recovered"] is False
    assert b.frames[1]["type"] == "snapshot"
    assert b.frames[1]["seq"] == welcome["seq"] == a.seq
    assert next(iter(b.turns.values())).text() == FULL
    for v in (a, b):
        await v.close()


async def test_presence_counts_viewers(server: TestServer, session: aiohttp.ClientSession) -> None:
    """Viewers get presence events with the room's count, and the welcome carries it too."""
    a = await viewer(session, server, "pres")
    b = await viewer(session, server, "pres")
    assert b.frames[0]["viewers"] == 2
    await a.wait(lambda v: any(f["type"] == "presence" and f["viewers"] == 2 for f in v.frames))
    await b.close()
    await a.wait(lambda v: v.frames[-1] == {"type": "presence", "viewers": 1}, timeout=5)
    rooms = await (await session.get(server.make_url("/api/rooms"))).json()
    assert rooms["rooms"][0]["viewers"] == 1
    await a.close()
