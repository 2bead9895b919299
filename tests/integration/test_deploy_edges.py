"""Issue 13, the parts the other deploy tests leave open.

Replays over the WebSocket and replays that never count, forwarded headers with the default (empty)
trusted_proxies, SSE connections counted per forwarded client, Origin-checked GETs, room creation
per token ``sub`` on every path, the default forget horizon of bare rooms, the timing of a stalled
SSE reader's drop, the default connections per client, /v1/models refusals that never reach the
upstream, and the issue's own load-test commands against a real ``fanout serve``.

Different source addresses in 127.0.0.0/8 stand in for different clients and for the proxy.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import CoroutineType
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from server.core.types import RoomName
from server.http.auth import mint_token
from server.http.keys import CONFIG, HUB

from .conftest import (
    API_KEY,
    AUTH_SECRET,
    PROXY,
    ServerFactory,
    Sessions,
    post_prompt,
    viewer,
    ws_url,
)
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = aiohttp.ClientTimeout(total=15)


def _sse_url(server: TestServer, room: str) -> str:
    return str(server.make_url(f"/api/rooms/{room}/events"))


def _bearer(sub: str, room: str = "*", role: str = "publisher") -> dict[str, str]:
    token = mint_token(AUTH_SECRET, room, role, 600, sub=sub)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll server-side state, which has no event to await, within ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# --- idempotent replays ----------------------------------------------------------------------


async def test_ten_clients_sending_one_prompt_id_at_once_get_one_turn_and_no_rate_limit(
    make_server: ServerFactory, upstream: FakeUpstream, from_address: Sessions
) -> None:
    """Ten WebSocket clients sending one prompt id at once get one turn.

    Ten WebSocket clients of one principal send the same prompt id at once, on a budget of one,
    while the turn streams: one turn.start each, one upstream stream, no error for the id; a fresh
    id from each is then rate_limited (the budget really is one).
    """
    upstream.always(Script(chunks=text_stream(ANSWER), gap=0.2))
    server = await make_server(limits__prompt_burst=1, limits__prompts_per_minute=1)
    session = from_address("127.0.0.2")
    viewers = [await viewer(session, server, "same") for _ in range(10)]
    await asyncio.gather(
        *(v.send({"type": "prompt", "content": "hi", "id": "one"}) for v in viewers)
    )
    for i, v in enumerate(viewers):
        # Frames of one connection are handled in order: the probe's answer comes after "one"'s.
        await v.send({"type": "prompt", "content": "hi", "id": f"probe{i}"})
        await v.wait(lambda x, i=i: any(e["ref"] == f"probe{i}" for e in x.errors))
    for i, v in enumerate(viewers):
        await v.wait_turn_end()
        assert [(e["code"], e["ref"]) for e in v.errors] == [("rate_limited", f"probe{i}")]
        assert [f["type"] for f in v.frames].count("turn.start") == 1
        assert v.problems == []
    assert len(upstream.requests) == 1
    for v in viewers:
        await v.close()


async def test_replays_never_spend_the_prompt_budget(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """On a budget of two.

    A prompt, five POST replays and five WebSocket replays of it, then a fresh prompt still gets 202
    (the replays spent nothing), and the next is 429.
    """
    server = await make_server(limits__prompt_burst=2, limits__prompts_per_minute=1)
    watcher = await viewer(session, server, "never")
    status, first = await post_prompt(session, server, "never", id="x")
    assert status == 202
    await watcher.wait_turn_end(first["turn"])
    for _ in range(5):
        status, body = await post_prompt(session, server, "never", id="x")
        assert (status, body["turn"]) == (202, first["turn"])
        await watcher.send({"type": "prompt", "content": "hi", "id": "x"})
    await watcher.send({"type": "cancel", "turn": "no-such-turn", "id": "probe"})
    await watcher.wait(lambda v: any(e["ref"] == "probe" for e in v.errors))
    assert [e["ref"] for e in watcher.errors] == ["probe"]  # no error for any replay
    status, second = await post_prompt(session, server, "never", id="y")
    assert status == 202, second
    await watcher.wait_turn_end(second["turn"])
    status, body = await post_prompt(session, server, "never", id="z")
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert len(upstream.requests) == 2
    await watcher.close()


# --- forwarded headers -----------------------------------------------------------------------


async def test_with_no_trusted_proxies_forwarded_headers_change_nothing(
    make_server: ServerFactory, from_address: Sessions
) -> None:
    """server.trusted_proxies is empty by default.

    X-Forwarded-For / Forwarded give a client no other prompt budget or connection count, and
    X-Forwarded-Proto / -Host no other Host or own origin.
    """
    server = await make_server(
        limits__prompt_burst=1,
        limits__prompts_per_minute=1,
        limits__max_connections_per_client=1,
        server__allowed_hosts=["chat.example.com"],
    )
    assert server.app[CONFIG].server.trusted_proxies == []
    client = from_address("127.0.0.2")
    assert (await post_prompt(client, server, "a", {"X-Forwarded-For": "198.51.100.1"}))[0] == 202
    for spoof in ({"X-Forwarded-For": "198.51.100.2"}, {"Forwarded": "for=198.51.100.3"}):
        status, body = await post_prompt(client, server, "b", spoof)
        assert (status, body["error"]["code"]) == (429, "rate_limited"), spoof
    one = await client.ws_connect(ws_url(server, "c"), headers={"X-Forwarded-For": "192.0.2.1"})
    assert (await one.receive_json(timeout=5))["type"] == "welcome"
    two = await client.ws_connect(
        ws_url(server, "c"), headers={"X-Forwarded-For": "192.0.2.2"}, autoclose=False
    )
    msg = await two.receive(timeout=5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4503)
    async with client.get(_sse_url(server, "c"), headers={"Forwarded": "for=192.0.2.3"}) as r:
        assert r.status == 503
    for ws in (one, two):
        await ws.close()
    # An allowed Host and its own Origin pass whatever X-Forwarded-Host / -Proto say...
    other = from_address("127.0.0.3")
    port = server.port
    own = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}
    fake = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    assert (await post_prompt(other, server, "d", {**own, **fake}))[0] == 202
    # ...and they cannot make a foreign Host or Origin pass.
    forged = {
        "X-Forwarded-Host": "chat.example.com",
        "X-Forwarded-Proto": "https",
        "Origin": "https://chat.example.com",
    }
    status, body = await post_prompt(from_address("127.0.0.4"), server, "e", forged)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await post_prompt(
        from_address("127.0.0.5"), server, "f", {"Host": "evil.example", **forged}
    )
    assert (status, body["error"]["code"]) == (400, "bad_request")


async def test_a_trusted_proxy_counts_sse_connections_per_forwarded_client(
    make_server: ServerFactory, from_address: Sessions
) -> None:
    """Behind the proxy each client's SSE streams count against its own address.

    (503 past one).
    """
    server = await make_server(
        server__trusted_proxies=[PROXY], limits__max_connections_per_client=1
    )
    proxy = from_address(PROXY)
    url = _sse_url(server, "s")
    first = await proxy.get(url, headers={"X-Forwarded-For": "192.0.2.1"})
    second = await proxy.get(url, headers={"X-Forwarded-For": "192.0.2.2"})
    assert (first.status, second.status) == (200, 200)
    await _until(lambda: len(server.app[HUB].rooms[RoomName("s")].subscribers) == 2)
    for again in ({"X-Forwarded-For": "192.0.2.1"}, {"X-Forwarded-For": "10.1.1.1, 192.0.2.2"}):
        async with proxy.get(url, headers=again) as resp:
            assert resp.status == 503, again
            assert (await resp.json())["error"]["code"] == "unavailable"
    first.close()
    second.close()


# --- room slots ------------------------------------------------------------------------------


async def test_a_get_with_a_foreign_origin_is_refused_and_creates_no_room(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A web page's GET /api/rooms/{room} (its Origin is foreign) is 403 and takes no room slot.

    The server's own origin gets the snapshot.
    """
    url = server.make_url("/api/rooms/slot-1")
    async with session.get(url, headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "forbidden"
    assert RoomName("slot-1") not in server.app[HUB].rooms
    own = f"http://127.0.0.1:{server.port}"
    async with session.get(url, headers={"Origin": own}) as resp:
        assert resp.status == 200
    assert RoomName("slot-1") in server.app[HUB].rooms


async def test_room_creation_is_budgeted_per_token_sub_on_every_path(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Token mode: the room budget is the token's sub.

    Past it, a new room is 429 by GET, POST prompt, the tap, SSE and the WebSocket; another sub on
    the same address is not.
    """
    server = await make_server(auth__mode="token", limits__room_burst=2, limits__rooms_per_minute=1)
    ann, ben = _bearer("ann"), _bearer("ben")
    for name in ("n1", "n2"):
        async with session.get(server.make_url(f"/api/rooms/{name}"), headers=ann) as resp:
            assert resp.status == 200
    tap_body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    attempts = [
        session.get(server.make_url("/api/rooms/n3"), headers=ann),
        session.post(server.make_url("/api/rooms/n3/prompts"), json={"content": "hi"}, headers=ann),
        session.post(
            server.make_url("/v1/chat/completions"), json=tap_body, headers={**ann, "X-Room": "n3"}
        ),
        session.get(_sse_url(server, "n3"), headers=ann),
    ]
    for attempt in attempts:
        async with attempt as resp:
            assert resp.status == 429, resp.url
            error = (await resp.json())["error"]
            assert error["code"] == "rate_limited"
            assert "new rooms" in error["message"]  # the room budget, not the prompt budget
    token = ann["Authorization"].removeprefix("Bearer ")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(ws_url(server, "n3") + f"?token={token}")
    assert refused.value.status == 429
    assert RoomName("n3") not in server.app[HUB].rooms
    async with session.get(server.make_url("/api/rooms/n3"), headers=ben) as resp:
        assert resp.status == 200


async def test_a_bare_get_room_is_forgotten_within_a_minute_by_default(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """With the default settings a room made by a bare GET goes within a minute.

    Its forget horizon plus the sweeper's period (read from the running sweeper) is at most 60 s,
    and the hub forgets it at that horizon, not before.
    """
    async with session.get(server.make_url("/api/rooms/bare")) as resp:
        assert resp.status == 200
    hub = server.app[HUB]
    rooms = server.app[CONFIG].rooms
    idle, empty = rooms.idle_forget_seconds, rooms.empty_forget_seconds
    sweepers = [t for t in asyncio.all_tasks() if t.get_name() == "room-sweeper"]
    assert len(sweepers) == 1
    coro = cast("CoroutineType[Any, Any, None]", sweepers[0].get_coro())
    assert coro.cr_frame is not None  # a suspended coroutine still has its frame
    every = coro.cr_frame.f_locals["every"]  # the period it sleeps between looks
    assert 0 < empty <= 60
    assert empty + every <= 60, (empty, every)
    await _until(lambda: not hub.rooms[RoomName("bare")].listening)
    since = hub.rooms[RoomName("bare")].idle_since
    assert hub.forget_idle(since + empty - 1, idle, empty) == 0
    assert hub.forget_idle(since + empty, idle, empty) == 1
    assert RoomName("bare") not in hub.rooms


async def test_a_watched_room_nothing_happened_in_stays_until_its_viewer_leaves(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A seq-0 room with a viewer is not forgotten however long it waits.

    Once the viewer leaves it goes like a bare one.
    """
    server = await make_server(rooms__empty_forget_seconds=0.3)
    hub = server.app[HUB]
    watcher = await viewer(session, server, "watched")
    async with session.get(server.make_url("/api/rooms/bare2")) as resp:
        assert resp.status == 200
    await _until(lambda: RoomName("bare2") not in hub.rooms)  # the sweeper ran meanwhile
    await asyncio.sleep(0.6)  # two more horizons
    assert RoomName("watched") in hub.rooms
    assert len(hub.rooms[RoomName("watched")].subscribers) == 1
    await watcher.close()
    await _until(lambda: RoomName("watched") not in hub.rooms)


# --- readers that stop reading ---------------------------------------------------------------

PIECES = [f"<{i:04d}>" + "z" * 4090 for i in range(160)]  # a ~650 kB snapshot


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_stalled_sse_reader_is_dropped_after_close_timeout_not_before(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """An SSE reader stalled on its join burst is dropped after close_timeout, not before.

    An SSE reader that never reads its join burst (ten times limits.outbox_bytes) stays for
    limits.close_timeout_seconds and is dropped soon after, in a room where nothing happens (the
    keep-alive is far off, so only the stall watch can drop it).
    """
    close_timeout = 1.5
    server = await make_server(
        limits__outbox_bytes=64 * 1024,
        limits__send_buffer_bytes=4096,
        limits__close_timeout_seconds=close_timeout,
    )
    upstream.always(Script(chunks=text_stream(PIECES), gap=0, split=False))
    status, _body = await post_prompt(session, server, "stall")
    assert status == 202
    hub = server.app[HUB]
    await _until(lambda: hub.rooms[RoomName("stall")].state.streaming_turn is None)
    subscribers = hub.rooms[RoomName("stall")].subscribers
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as tight:
        stalled = await tight.get(_sse_url(server, "stall"))  # headers read, the body never
        assert stalled.status == 200
        await _until(lambda: len(subscribers) == 1)
        joined = loop.time()
        await _until(lambda: len(subscribers) == 0, timeout=close_timeout + 8)
        waited = loop.time() - joined
        stalled.close()
    assert close_timeout - 0.2 <= waited <= close_timeout + 5, waited


async def test_the_default_connection_limit_is_256_per_client_address(
    server: TestServer, from_address: Sessions
) -> None:
    """Default settings.

    256 WebSocket connections from one address are welcome, the 257th is closed with 4503; another
    address still gets in.
    """
    mine = from_address("127.0.0.2")
    url = ws_url(server, "many")
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def join() -> aiohttp.ClientWebSocketResponse:
        ws = await mine.ws_connect(url)
        assert (await ws.receive_json(timeout=10))["type"] == "welcome"
        return ws

    try:
        for _ in range(8):  # 8 x 32 = 256, bounded
            sockets += await asyncio.gather(*(join() for _ in range(32)))
        extra = await mine.ws_connect(url, autoclose=False)
        sockets.append(extra)
        msg = await extra.receive(timeout=10)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4503)
        other = await from_address("127.0.0.3").ws_connect(url)
        sockets.append(other)
        assert (await other.receive_json(timeout=10))["type"] == "welcome"
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# --- /v1/models ------------------------------------------------------------------------------


async def test_models_refusals_never_reach_the_upstream(make_server: ServerFactory) -> None:
    """Token mode: only a publisher's tap request reaches the upstream.

    Token mode: no token, a bad one, a viewer or another room is refused without any request to the
    upstream; a publisher's request reaches it once, with the server's key.
    """
    seen: list[str | None] = []

    async def models(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    fake = TestServer(app, host="127.0.0.1", port=0)
    await fake.start_server()
    try:
        server = await make_server(auth__mode="token", upstream__base_url=str(fake.make_url("/v1")))
        url = server.make_url("/v1/models")
        refused = [
            ({}, 401),
            ({"Authorization": "Bearer garbage"}, 401),
            (_bearer("v", room="r", role="viewer"), 403),
            ({**_bearer("p", room="r"), "X-Room": "other"}, 403),
        ]
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            for headers, status in refused:
                async with session.get(url, headers=headers) as resp:
                    assert resp.status == status, headers
            assert seen == []
            async with session.get(url, headers={**_bearer("p", room="r"), "X-Room": "r"}) as r:
                assert r.status == 200
                assert (await r.json())["data"][0]["id"] == "m"
        assert seen == [f"Bearer {API_KEY}"]
    finally:
        await fake.close()


# --- the issue's load-test commands against `fanout serve` -----------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_fanout_serve_with_defaults_passes_the_issues_loadtest_commands(
    tmp_path: Path,
) -> None:
    """`fanout serve` with no settings passes both loadtest commands of the issue.

    `fanout serve` with no settings at all (demo mode, config.toml's defaults), then `fanout
    loadtest --subscribers 100 --rooms 10 --prompts 2` and `fanout loadtest --rooms 20 --prompts 3`,
    back to back against the same server: both exit 0 and check OK.
    """
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("FANOUT_")
    }
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "serve.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            "serve",
            "--port",
            str(port),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with aiohttp.ClientSession() as s, asyncio.timeout(20):
                while True:
                    try:
                        async with s.get(url + "/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            for args in (
                ["--subscribers", "100", "--rooms", "10", "--prompts", "2"],
                ["--rooms", "20", "--prompts", "3"],
            ):
                run = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "server",
                    "loadtest",
                    "--url",
                    url,
                    *args,
                    "--quiet",
                    cwd=ROOT,
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                async with asyncio.timeout(90):
                    out, err = await run.communicate()
                assert run.returncode == 0, (args, out[-2000:], err[-2000:])
                assert b"check          OK: 100 subscribers rebuilt" in out, out[-2000:]
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    served = (tmp_path / "serve.log").read_text()
    assert " 429 " not in served
