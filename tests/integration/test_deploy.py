"""Deployed for real.

Trusted proxies, the Host allowlist (DNS rebinding), budgets per principal, idempotent replays, room
creation, /v1/models in token mode.

Different source addresses in 127.0.0.0/8 stand in for different clients and for the proxy.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.http.auth import mint_token
from server.http.keys import HUB

from .conftest import AUTH_SECRET, PROXY, ServerFactory, Sessions, post_prompt, ws_url
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream

# --- trusted proxies -------------------------------------------------------------------------


async def test_only_a_trusted_proxy_sets_the_client_address(
    make_server: ServerFactory, from_address: Sessions
) -> None:
    """Behind a trusted proxy each client has its own prompt budget (X-Forwarded-For).

    A spoofed X-Forwarded-For from any other peer, or a Forwarded header, changes nothing.
    """
    server = await make_server(
        server__trusted_proxies=[PROXY], limits__prompt_burst=1, limits__prompts_per_minute=1
    )
    proxy, direct = from_address(PROXY), from_address("127.0.0.2")
    alice, bob = {"X-Forwarded-For": "203.0.113.5"}, {"X-Forwarded-For": "203.0.113.6"}
    assert (await post_prompt(proxy, server, "a1", alice))[0] == 202
    status, body = await post_prompt(proxy, server, "a2", alice)
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert (await post_prompt(proxy, server, "b1", bob))[0] == 202  # another client behind it
    # A chain: the client's own header first, the proxy appends the address it saw.
    chain = {"X-Forwarded-For": "10.9.9.9, 203.0.113.7"}
    assert (await post_prompt(proxy, server, "c1", chain))[0] == 202
    assert (await post_prompt(proxy, server, "c2", {"X-Forwarded-For": "203.0.113.7"}))[0] == 429
    # The proxy writes X-Forwarded-For: a Forwarded header is the client's, and means nothing.
    forwarded = {"Forwarded": "for=203.0.113.8", "X-Forwarded-For": "203.0.113.7"}
    assert (await post_prompt(proxy, server, "d1", forwarded))[0] == 429
    # Spoofing from a peer that is no trusted proxy: its budget stays its own address's.
    assert (await post_prompt(direct, server, "e1", {"X-Forwarded-For": "198.51.100.1"}))[0] == 202
    assert (await post_prompt(direct, server, "e2", {"X-Forwarded-For": "198.51.100.2"}))[0] == 429
    assert (await post_prompt(direct, server, "e3", {"Forwarded": "for=198.51.100.3"}))[0] == 429


async def test_a_proxy_that_writes_forwarded_is_read_from_forwarded_only(
    make_server: ServerFactory, from_address: Sessions
) -> None:
    """With proxy_header forwarded, the client is the right-most untrusted ``for=``.

    With ``server.proxy_header = "forwarded"`` (a proxy writing RFC 7239 ``Forwarded``), the client
    is the right-most untrusted ``for=``; the X-Forwarded-For the client sent itself (the proxy
    passes it on) changes nothing.
    """
    server = await make_server(
        server__trusted_proxies=[PROXY],
        server__proxy_header="forwarded",
        limits__prompt_burst=1,
        limits__prompts_per_minute=1,
    )
    proxy = from_address(PROXY)
    carol = {"Forwarded": 'for="203.0.113.8:4711";proto=http'}
    assert (await post_prompt(proxy, server, "f1", carol))[0] == 202
    assert (await post_prompt(proxy, server, "f2", carol))[0] == 429
    for i in range(3):  # carol again, each time with another X-Forwarded-For of her own
        spoof = {**carol, "X-Forwarded-For": f"10.0.0.{i + 1}"}
        assert (await post_prompt(proxy, server, f"g{i}", spoof))[0] == 429
    dave = {"Forwarded": "for=203.0.113.9, for=127.0.0.1"}  # a chain through a second proxy
    assert (await post_prompt(proxy, server, "h1", dave))[0] == 202


async def test_repeated_x_forwarded_lines_are_one_list(
    make_server: ServerFactory, from_address: Sessions, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy that adds its own X-Forwarded-For line (HAProxy) instead of extending the client's.

    The lines are one list (RFC 9110), the right-most untrusted address is the client, and nothing
    is logged as an error.
    """
    server = await make_server(
        server__trusted_proxies=[PROXY], limits__prompt_burst=1, limits__prompts_per_minute=1
    )
    proxy = from_address(PROXY)
    lines = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.20")]
    twice = [*lines, ("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "http")]
    assert (await post_prompt(proxy, server, "r1", twice))[0] == 202
    assert (await post_prompt(proxy, server, "r2", {"X-Forwarded-For": "203.0.113.20"}))[0] == 429
    assert (await post_prompt(proxy, server, "r3", {"X-Forwarded-For": "198.51.100.1"}))[0] == 202
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_trusted_proxy_sets_scheme_and_host_and_others_cannot(
    make_server: ServerFactory, from_address: Sessions
) -> None:
    """X-Forwarded-Proto/-Host set the own origin from the proxy only.

    From the proxy, X-Forwarded-Proto/-Host make https://chat.example.com the server's own origin;
    the same headers from another peer leave Host and scheme as they came.
    """
    server = await make_server(
        server__trusted_proxies=[PROXY], server__allowed_hosts=["chat.example.com"]
    )
    forwarded = {
        "X-Forwarded-For": "203.0.113.5",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "chat.example.com",
        "Origin": "https://chat.example.com",
    }
    assert (await post_prompt(from_address(PROXY), server, "p", forwarded))[0] == 202
    status, body = await post_prompt(from_address("127.0.0.2"), server, "q", forwarded)
    assert (status, body["error"]["code"]) == (403, "forbidden")  # own origin is http://127...
    sneaky = {"X-Forwarded-Host": "chat.example.com", "Host": "evil.example"}
    status, body = await post_prompt(from_address("127.0.0.2"), server, "r", sneaky)
    assert (status, body["error"]["code"]) == (400, "bad_request")


async def test_connections_per_client_count_the_forwarded_address(
    make_server: ServerFactory, from_address: Sessions
) -> None:
    """Behind the proxy two clients each get their own connection count (4503 past it)."""
    server = await make_server(
        server__trusted_proxies=["127.0.0.8/29"], limits__max_connections_per_client=1
    )
    proxy = from_address(PROXY)
    one = await proxy.ws_connect(ws_url(server, "c"), headers={"X-Forwarded-For": "192.0.2.1"})
    two = await proxy.ws_connect(ws_url(server, "c"), headers={"X-Forwarded-For": "192.0.2.2"})
    for ws in (one, two):
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    again = await proxy.ws_connect(
        ws_url(server, "c"), headers={"X-Forwarded-For": "192.0.2.1"}, autoclose=False
    )
    msg = await again.receive(timeout=5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4503)
    for ws in (one, two, again):
        await ws.close()


# --- the Host allowlist and DNS rebinding ----------------------------------------------------


async def test_dns_rebinding_is_refused_before_any_handler(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A foreign Host is 400 everywhere but /healthz, with no upstream request.

    A foreign Host (with its matching foreign Origin) is 400 on prompts, the text/plain tap and any
    path, and no upstream request is made; /healthz answers health checks anyway.
    """
    port = server.port
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    status, body = await post_prompt(session, server, "r", evil)
    assert (status, body["error"]["code"]) == (400, "bad_request")
    tap = server.make_url("/v1/chat/completions")
    payload = '{"model":"m","messages":[{"role":"user","content":"spend the key"}]}'
    headers = {**evil, "X-Room": "r", "Content-Type": "text/plain"}
    async with session.post(tap, data=payload, headers=headers) as resp:
        assert resp.status == 400
    async with session.get(server.make_url("/api/rooms"), headers=evil) as resp:
        assert resp.status == 400
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(ws_url(server, "r"), headers=evil)
    assert refused.value.status == 400
    async with session.get(server.make_url("/healthz"), headers={"Host": "10.1.2.3"}) as resp:
        assert resp.status == 200
    assert upstream.requests == []


async def test_origin_is_compared_with_the_allowlist_not_the_host(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Loopback names on any port and configured names pass.

    A foreign Origin with an allowed Host is 403; the own origin keeps the request's port.
    """
    server = await make_server(server__allowed_hosts=["chat.example.com"])
    port = server.port
    assert port is not None
    hosts = (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "chat.example.com")
    for i, host in enumerate(hosts):
        origin = f"http://{host}"
        status, _ = await post_prompt(session, server, f"ok{i}", {"Host": host, "Origin": origin})
        assert status == 202, host
    for host, origin in [
        (f"127.0.0.1:{port}", "http://evil.example"),
        (f"localhost:{port}", f"http://localhost:{port + 1}"),  # another local app
        ("chat.example.com", "https://chat.example.com"),  # the scheme differs
    ]:
        status, body = await post_prompt(session, server, "no", {"Host": host, "Origin": origin})
        assert (status, body["error"]["code"]) == (403, "forbidden"), (host, origin)
    status, _ = await post_prompt(session, server, "no", {"Host": "chat.example.com.evil.example"})
    assert status == 400


# --- budgets ---------------------------------------------------------------------------------


async def test_two_hundred_back_to_back_prompt_frames_are_limited_then_closed_4001(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A flood of prompt frames gets rate_limited, then close 4001.

    With the default limits a flood of prompt frames on one connection gets rate_limited, then close
    4001.
    """
    ws = await session.ws_connect(ws_url(server, "flood"), autoclose=False)
    for i in range(200):
        await ws.send_json({"type": "prompt", "content": "hi", "id": f"f{i}"})
    limited, close = 0, None
    async with asyncio.timeout(10):
        while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
            frame = msg.json()
            limited += frame["type"] == "error" and frame["code"] == "rate_limited"
        close = msg.data
    assert limited == 10  # limits.max_rate_limited_frames
    assert close == 4001
    await ws.close()


async def test_concurrent_posts_with_one_id_get_one_turn_and_spend_nothing(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Ten concurrent POSTs with one id all get 202 and the same turn, even on a budget of one.

    Replays later, on an empty budget, still get it; one upstream stream in all.
    """
    server = await make_server(limits__prompt_burst=1, limits__prompts_per_minute=1)
    answers = await asyncio.gather(
        *(post_prompt(session, server, "idem", id="same") for _ in range(10))
    )
    assert {status for status, _ in answers} == {202}
    assert len({body["turn"] for _, body in answers}) == 1
    assert (await post_prompt(session, server, "idem", id="same"))[0] == 202
    status, body = await post_prompt(session, server, "idem", id="other")
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert len(upstream.requests) == 1


async def test_prompt_budgets_are_per_token_sub_in_token_mode(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """In token mode the budget is the token's sub: two users on one address each have one."""
    server = await make_server(
        auth__mode="token", limits__prompt_burst=1, limits__prompts_per_minute=1
    )

    def bearer(sub: str) -> dict[str, str]:
        token = mint_token(AUTH_SECRET, "*", "publisher", 60, sub=sub)
        return {"Authorization": f"Bearer {token}"}

    assert (await post_prompt(session, server, "t1", bearer("ann")))[0] == 202
    assert (await post_prompt(session, server, "t2", bearer("ann")))[0] == 429
    assert (await post_prompt(session, server, "t3", bearer("ben")))[0] == 202


async def test_room_creation_is_budgeted_per_principal(
    make_server: ServerFactory, from_address: Sessions
) -> None:
    """Past the room budget a new room is 429 (GET, WebSocket, SSE).

    Rooms that exist and other clients are not affected.
    """
    server = await make_server(limits__room_burst=2, limits__rooms_per_minute=1)
    one, two = from_address("127.0.0.2"), from_address("127.0.0.3")
    for name in ("s1", "s2"):
        async with one.get(server.make_url(f"/api/rooms/{name}")) as resp:
            assert resp.status == 200
    for path in ("/api/rooms/s3", "/api/rooms/s3/events"):
        async with one.get(server.make_url(path)) as resp:
            assert resp.status == 429
            assert (await resp.json())["error"]["code"] == "rate_limited"
            assert int(resp.headers["Retry-After"]) >= 1
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await one.ws_connect(ws_url(server, "s3"))
    assert refused.value.status == 429
    async with one.get(server.make_url("/api/rooms/s1")) as resp:
        assert resp.status == 200  # an existing room costs nothing
    async with two.get(server.make_url("/api/rooms/s3")) as resp:
        assert resp.status == 200


async def test_rooms_made_by_a_bare_get_are_forgotten_soon(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A room nothing happened in goes after rooms.empty_forget_seconds; a used one stays."""
    server = await make_server(rooms__empty_forget_seconds=0.3)
    async with session.get(server.make_url("/api/rooms/bare")) as resp:
        assert resp.status == 200
    status, _body = await post_prompt(session, server, "used")
    assert status == 202
    hub = server.app[HUB]
    assert {"bare", "used"} <= set(hub.rooms)
    for _ in range(100):  # the sweeper looks every 0.15 s here (polled, bounded)
        if "bare" not in hub.rooms:
            break
        await asyncio.sleep(0.05)
    assert "bare" not in hub.rooms
    assert "used" in hub.rooms


# --- /v1/models ------------------------------------------------------------------------------


async def test_models_follow_the_taps_token_rules(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """Token mode: /v1/models answers by role and room.

    Token mode: /v1/models is 401 without a token, 403 for a viewer or another X-Room, and the
    upstream's list for a publisher.
    """
    server = await make_server(auth__mode="token")
    url = server.make_url("/v1/models")

    def bearer(room: str, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(AUTH_SECRET, room, role, 60)}"}  # type: ignore[arg-type]

    cases = [
        ({}, 401),
        ({"Authorization": "Bearer garbage"}, 401),
        (bearer("r", "viewer"), 403),
        ({**bearer("r", "publisher"), "X-Room": "other"}, 403),
        ({**bearer("r", "publisher"), "X-Room": "r"}, 200),
        (bearer("r", "publisher"), 200),
    ]
    for headers, status in cases:
        async with session.get(url, headers=headers) as resp:
            assert resp.status == status, headers
            if status == 200:
                assert (await resp.json())["data"][0]["id"] == "fake-model"


async def test_a_long_answer_does_not_trip_the_budget_twice(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A prompt refused with turn_in_progress still spent one prompt.

    One that was a replay did not (the budget of two allows exactly: start, busy, replay, replay).
    """
    upstream.always(Script(chunks=text_stream(ANSWER), gap=1.0))
    server = await make_server(limits__prompt_burst=2, limits__prompts_per_minute=1)
    assert (await post_prompt(session, server, "long", id="x"))[0] == 202
    assert (await post_prompt(session, server, "long", id="y"))[0] == 409
    assert (await post_prompt(session, server, "long", id="x"))[0] == 202
    assert (await post_prompt(session, server, "long", id="x"))[0] == 202
    assert (await post_prompt(session, server, "long", id="z"))[0] == 429
