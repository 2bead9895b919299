"""Several fanout instances on one real redis-server.

One upstream request per prompt, identical text on every instance, late join and resume anywhere,
one turn at a time, Redis restarts, a producer killed mid-stream, a wiped Redis.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.http.keys import HUB
from tests.integration.conftest import ServerFactory, ws_url
from tests.integration.fake_upstream import FakeUpstream, Script, text_stream
from tests.integration.viewer import Viewer

from .processes import LEASE, healthy, serve_in_a_process
from .redis_server import RedisServer, free_port

WORDS = [f" w{i}" for i in range(60)]
SLOW = Script(chunks=text_stream(WORDS), gap=0.03, split=False)


async def instances(
    make_server: ServerFactory, redis: RedisServer, count: int, **overrides: Any
) -> list[TestServer]:
    return [
        await make_server(**{"broker__url": redis.url, "broker__lease_seconds": LEASE, **overrides})
        for _ in range(count)
    ]


async def watch(session: aiohttp.ClientSession, server: TestServer, room: str) -> Viewer:
    return await Viewer(session, ws_url(server, room)).connect()


async def prompt(
    session: aiohttp.ClientSession, server: TestServer, room: str, content: str = "hi", **more: Any
) -> aiohttp.ClientResponse:
    url = server.make_url(f"/api/rooms/{room}/prompts")
    return await session.post(url, json={"content": content, **more})


async def reconnect(viewer: Viewer, server: TestServer, room: str) -> dict[str, Any]:
    """Resume ``viewer`` (closed) on ``server`` with what it has seen; its new welcome."""
    before = sum(f["type"] == "welcome" for f in viewer.frames)
    viewer.url = ws_url(server, room)
    await viewer.connect(f"?epoch={viewer.epoch}&since={viewer.seq}")
    await viewer.wait(lambda v: sum(f["type"] == "welcome" for f in v.frames) > before)
    return [f for f in viewer.frames if f["type"] == "welcome"][-1]


def clean(viewers: list[Viewer]) -> None:
    for v in viewers:
        assert v.problems == [], v.problems


async def test_one_prompt_one_upstream_request_same_text_everywhere(
    make_server: ServerFactory,
    redis_server: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """Three instances, six viewers: one upstream request, the same events and text everywhere."""
    servers = await instances(make_server, redis_server, 3)
    viewers = [await watch(session, s, "hall") for s in servers for _ in range(2)]
    response = await prompt(session, servers[1], "hall")
    assert response.status == 202
    turn = (await response.json())["turn"]
    texts = [(await v.wait_turn_end(turn)).text() for v in viewers]
    assert texts == ["Hello, wörld! Café naïve 🚀 déjà vu."] * 6
    assert len(upstream.requests) == 1
    clean(viewers)
    assert len({v.epoch for v in viewers}) == 1
    assert len({v.seq for v in viewers}) == 1
    statuses = {v.turns[turn].end["status"] for v in viewers}  # type: ignore[index]
    assert statuses == {"completed"}
    # every instance's snapshot and room list agree
    for s in servers:
        snap = await (await session.get(s.make_url("/api/rooms/hall"))).json()
        assert snap["turns"][0]["choices"][0]["content"] == texts[0]
        assert snap["turns"][0]["status"] == "completed"
        assert snap["turns"][0]["usage"] == {
            "prompt_tokens": 10,
            "completion_tokens": 20,
            "total_tokens": 30,
        }


async def test_presence_is_summed_across_instances(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    """Presence counts the viewers of every instance."""
    servers = await instances(make_server, redis_server, 2)
    first = await watch(session, servers[0], "busy")
    others = [await watch(session, servers[1], "busy") for _ in range(3)]
    await first.wait(
        lambda v: any(f["type"] == "presence" and f["viewers"] == 4 for f in v.frames), 5
    )
    rooms = await (await session.get(servers[0].make_url("/api/rooms"))).json()
    assert rooms["rooms"][0]["viewers"] == 4
    for v in others:
        await v.close()
    await first.wait(
        lambda v: v.frames[-1]["type"] == "presence" and v.frames[-1]["viewers"] == 1, 5
    )


async def test_late_join_and_resume_on_another_instance(
    make_server: ServerFactory,
    redis_server: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """A late joiner elsewhere gets the partial turn; a viewer resumes on another instance."""
    upstream.always(SLOW)
    a, b = await instances(make_server, redis_server, 2)
    early = await watch(session, a, "late")
    turn = (await (await prompt(session, a, "late")).json())["turn"]
    await early.wait(lambda v: turn in v.turns and len(v.turns[turn].text()) > 20)
    # A late joiner on B gets a snapshot with the partial turn, then the rest.
    late = await watch(session, b, "late")
    snapshot = next(f for f in late.frames if f["type"] == "snapshot")
    assert snapshot["turns"][0]["status"] == "streaming"
    assert snapshot["turns"][0]["choices"][0]["content"]
    # The early viewer drops off A and resumes on B with epoch/since: recovered, no gap.
    await early.close()
    welcome = await reconnect(early, b, "late")
    assert welcome["recovered"] is True
    expected = "".join(WORDS)
    assert (await early.wait_turn_end(turn)).text() == expected
    assert (await late.wait_turn_end(turn)).text() == expected
    clean([early, late])
    assert len(upstream.requests) == 1


async def test_concurrent_prompts_on_two_instances_make_one_turn(
    make_server: ServerFactory,
    redis_server: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """Prompts racing on three instances start exactly one turn each time."""
    upstream.always(SLOW)
    servers = await instances(make_server, redis_server, 3)
    viewers = [await watch(session, s, "race") for s in servers]
    for attempt in range(3):
        responses = await asyncio.gather(
            *(prompt(session, s, "race", f"go {attempt}") for s in servers for _ in range(2))
        )
        statuses = sorted(r.status for r in responses)
        assert statuses == [202, 409, 409, 409, 409, 409]
        bodies = [await r.json() for r in responses]
        refused = [b for b in bodies if "turn" not in b]
        assert {b["error"]["code"] for b in refused} == {"turn_in_progress"}
        turn = next(b["turn"] for b in bodies if "turn" in b)
        texts = {(await v.wait_turn_end(turn, timeout=15)).text() for v in viewers}
        assert texts == {"".join(WORDS)}
    assert len(upstream.requests) == 3
    clean(viewers)
    assert len({len(v.turns) for v in viewers}) == 1


async def test_same_prompt_id_on_two_instances_starts_one_turn(
    make_server: ServerFactory,
    redis_server: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """The same prompt id on two instances answers with the same turn."""
    upstream.always(SLOW)
    a, b = await instances(make_server, redis_server, 2)
    first = await (await prompt(session, a, "idem", id="p-9")).json()
    again = await prompt(session, b, "idem", id="p-9")
    assert again.status == 202
    assert await again.json() == first
    viewer = await watch(session, b, "idem")
    await viewer.wait_turn_end(first["turn"])
    assert len(upstream.requests) == 1


async def test_cancel_on_another_instance_stops_the_upstream(
    make_server: ServerFactory,
    redis_server: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """Cancelling on the instance that does not stream ends the turn and its upstream."""
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.2, split=False))
    a, b = await instances(make_server, redis_server, 2)
    on_a, on_b = await watch(session, a, "stop"), await watch(session, b, "stop")
    turn = (await (await prompt(session, a, "stop")).json())["turn"]
    await on_b.wait(lambda v: turn in v.turns and v.turns[turn].text())
    cancel = await session.post(b.make_url(f"/api/rooms/stop/turns/{turn}/cancel"))
    assert cancel.status == 202
    ends = [(await v.wait_turn_end(turn)).end for v in (on_a, on_b)]
    assert [e["status"] for e in ends] == ["cancelled", "cancelled"]  # type: ignore[index]
    async with asyncio.timeout(5):
        await upstream.disconnected.wait()
    assert on_a.turns[turn].text() == on_b.turns[turn].text()
    clean([on_a, on_b])
    # the room is usable at once, from either instance
    assert (await prompt(session, a, "stop", "again")).status == 202


async def test_redis_restart_with_its_data_loses_nothing(
    make_server: ServerFactory,
    durable_redis: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """Redis restarted with its data mid-stream: every delta arrives, on every instance."""
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.04, split=False))
    a, b = await instances(make_server, durable_redis, 2, broker__lease_seconds=4.0)
    viewers = [await watch(session, s, "restart") for s in (a, b)]
    turn = (await (await prompt(session, a, "restart")).json())["turn"]
    await viewers[1].wait(lambda v: turn in v.turns and len(v.turns[turn].text()) > 10)
    await asyncio.to_thread(durable_redis.restart, 0.3)
    texts = [(await v.wait_turn_end(turn, timeout=20)).text() for v in viewers]
    assert texts == ["".join(WORDS)] * 2
    clean(viewers)
    assert len(upstream.requests) == 1
    assert viewers[1].turns[turn].end["status"] == "completed"  # type: ignore[index]


async def follow_to_end(viewer: Viewer, server: TestServer, room: str, turn: str) -> str:
    """The text of ``turn`` as ``viewer`` ends up with it, resuming as PROTOCOL.md asks of a 1011.

    A closed viewer reconnects with the epoch and seq it saw; a new epoch's snapshot replaces
    what it had.
    """
    async with asyncio.timeout(30):
        while True:
            try:
                return (await viewer.wait_turn_end(turn, timeout=30)).text()
            except AssertionError:  # the connection ended first
                assert viewer.close_code == 1011, viewer.close_code
                await reconnect(viewer, server, room)


async def test_redis_wiped_mid_stream_keeps_the_live_turn_and_the_earlier_ones(
    make_server: ServerFactory,
    redis_server: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """Redis restarted empty at ~30% of a streaming turn loses nothing.

    The producing instance stores the room again from its replica and streams on: every viewer,
    on either instance, ends with the exact upstream text after resuming; the upstream is asked
    once per prompt; the earlier turn is still in the snapshot.
    """
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.04, split=False))
    a, b = await instances(make_server, redis_server, 2)
    servers = (a, a, b, b)
    viewers = [await watch(session, s, "wiped") for s in servers]
    earlier = (await (await prompt(session, b, "wiped", "earlier")).json())["turn"]
    for v in viewers:
        await v.wait_turn_end(earlier, timeout=15)
    turn = (await (await prompt(session, a, "wiped", "live")).json())["turn"]
    await viewers[2].wait(
        lambda v: turn in v.turns and len(v.turns[turn].text()) >= len("".join(WORDS[:18])),
        timeout=15,
    )
    old_epoch = viewers[2].epoch
    await asyncio.to_thread(redis_server.restart, 0.2)
    texts = await asyncio.gather(
        *(follow_to_end(v, s, "wiped", turn) for v, s in zip(viewers, servers, strict=True))
    )
    assert texts == ["".join(WORDS)] * len(viewers)
    assert [v.turns[turn].status for v in viewers] == ["completed"] * len(viewers)
    assert len(upstream.requests) == 2  # one per prompt: the wipe asked for nothing again
    clean(viewers)
    for server in (a, b):
        late = await watch(session, server, "wiped")
        snapshot = next(f for f in late.frames if f["type"] == "snapshot")
        assert snapshot["epoch"] != old_epoch
        assert [t["id"] for t in snapshot["turns"]] == [earlier, turn]
        assert [late.turns[t].text() for t in (earlier, turn)] == ["".join(WORDS)] * 2
        await late.close()
    # The room takes a new prompt on the new epoch, everywhere.
    after = (await (await prompt(session, b, "wiped", "after")).json())["turn"]
    for v in viewers:
        assert (await v.wait_turn_end(after, timeout=15)).text() == "".join(WORDS)
    clean(viewers)


@pytest.mark.usefixtures("upstream")
async def test_a_flushed_redis_is_stored_again_from_a_replica(
    make_server: ServerFactory,
    redis_server: RedisServer,
    session: aiohttp.ClientSession,
) -> None:
    """FLUSHALL while idle: the room comes back on a new epoch with its turns; viewers resume."""
    a, b = await instances(make_server, redis_server, 2)
    watcher = await watch(session, b, "flush")
    turn = (await (await prompt(session, a, "flush")).json())["turn"]
    text = (await watcher.wait_turn_end(turn)).text()
    old_epoch, old_seq = watcher.epoch, watcher.seq
    redis_server.command("FLUSHALL")
    await watcher.wait(lambda v: v.close_code is not None, timeout=10)
    assert watcher.close_code == 1011
    fresh = await Viewer(session, ws_url(a, "flush")).connect(f"?epoch={old_epoch}&since={old_seq}")
    welcome = fresh.frames[0]
    assert (welcome["recovered"], welcome["seq"]) == (False, old_seq)
    assert welcome["epoch"] != old_epoch
    snapshot = fresh.frames[1]
    assert snapshot["type"] == "snapshot"
    assert [t["id"] for t in snapshot["turns"]] == [turn]
    assert text
    assert fresh.turns[turn].text() == text
    welcome = await reconnect(watcher, b, "flush")
    assert welcome["epoch"] == fresh.epoch
    again = (await (await prompt(session, b, "flush", "again")).json())["turn"]
    for v in (watcher, fresh):
        assert (await v.wait_turn_end(again)).text() == text
    clean([watcher, fresh])


async def test_producer_killed_mid_stream_ends_the_turn_truncated_everywhere(
    make_server: ServerFactory,
    redis_server: RedisServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """SIGKILL the streaming instance: the turn ends truncated elsewhere, the room goes on."""
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.1, split=False))
    (survivor,) = await instances(make_server, redis_server, 1)
    port = free_port()
    producer = serve_in_a_process(redis_server, upstream.base_url, port)
    try:
        base = f"http://127.0.0.1:{port}"
        await healthy(session, base)
        viewer = await watch(session, survivor, "doomed")
        other = await Viewer(session, f"ws://127.0.0.1:{port}/api/rooms/doomed/ws").connect()
        posted = await session.post(f"{base}/api/rooms/doomed/prompts", json={"content": "hi"})
        turn = (await posted.json())["turn"]
        await viewer.wait(lambda v: turn in v.turns and len(v.turns[turn].text()) > 8)
        producer.send_signal(signal.SIGKILL)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        end = (await viewer.wait_turn_end(turn, timeout=10)).end
        took = loop.time() - killed_at
        assert end is not None
        assert end["status"] == "truncated"
        assert took < LEASE * 4, took  # the lease, then one upkeep round
        for watcher in (viewer, other):  # the producer's own viewer too, until it died
            assert "".join(WORDS).startswith(watcher.turns[turn].text())
        clean([viewer])
        # The room is usable again: a prompt on the survivor streams to completion.
        again = await prompt(session, survivor, "doomed", "again")
        assert again.status == 202
        turn2 = (await again.json())["turn"]
        done = await viewer.wait_turn_end(turn2, timeout=15)
        assert done.text() == "".join(WORDS)
        assert done.end is not None
        assert done.end["status"] == "completed"
        clean([viewer])
    finally:
        producer.kill()
        producer.wait(10)


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.usefixtures("upstream")
async def test_each_event_crosses_redis_once_per_listening_instance(
    make_server: ServerFactory,
    redis_server: RedisServer,
    session: aiohttp.ClientSession,
    count: int,
) -> None:
    """Each event reaches each instance with viewers once, and none without."""
    servers = await instances(make_server, redis_server, count + 1)
    listening, idle = servers[:count], servers[count]
    viewers = [await watch(session, s, "count") for s in listening for _ in range(5)]
    turn = (await (await prompt(session, listening[0], "count")).json())["turn"]
    for v in viewers:
        await v.wait_turn_end(turn)
    events = viewers[0].seq  # turn.start + deltas + turn.end

    def heard() -> list[int]:
        return [s.app[HUB].broker.events_heard for s in servers]

    for _ in range(100):  # the producer's own copy may still be on its way (polled, bounded)
        if min(heard()[:count]) >= events:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # time for a duplicate to show up, if there were one
    # each instance with viewers heard every event exactly once; the idle one none
    assert heard() == [events] * count + [0]
    snapshot = await (await session.get(idle.make_url("/api/rooms/count"))).json()
    assert snapshot["seq"] == events  # the idle instance still serves the room on demand


async def test_healthz_says_when_redis_is_unreachable(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    """/healthz is 200 with Redis, 503 without it (new rooms cannot open), 200 once it is back."""
    (server,) = await instances(make_server, redis_server, 1)
    url = server.make_url("/healthz")
    assert (await session.get(url)).status == 200
    await asyncio.to_thread(redis_server.stop)
    down = await session.get(url)
    assert down.status == 503
    assert await down.json() == {"status": "degraded", "broker": "unreachable"}
    refused = await session.get(server.make_url("/api/rooms/new-room"))
    assert refused.status == 503
    await asyncio.to_thread(redis_server.start)
    assert (await session.get(url)).status == 200


async def test_many_first_joins_at_once_all_get_in(
    make_server: ServerFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    """Thirty viewers opening a new room at once on one instance: one load, all welcomed."""
    a, b = await instances(make_server, redis_server, 2)
    crowd = await asyncio.gather(*(watch(session, s, "crowd") for s in (a, b) for _ in range(15)))
    assert all(v.close_code is None for v in crowd)
    assert len({v.epoch for v in crowd}) == 1
    turn = (await (await prompt(session, a, "crowd")).json())["turn"]
    texts = {(await v.wait_turn_end(turn)).text() for v in crowd}
    assert texts == {"Hello, wörld! Café naïve 🚀 déjà vu."}
    clean(list(crowd))
