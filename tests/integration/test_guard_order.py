"""One guard, one order.

Every room entry point checks the Origin, then the token, then the room and role, and only
then reads the rest of the request.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.http.auth import mint_token

from .conftest import AUTH_SECRET, ServerFactory
from .fake_upstream import FakeUpstream

TAP_BODY = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}

# (method, path, headers, body) of every entry point, and a version whose request is also
# malformed in what is read after the guard (the resume point, the body). SSE reads its
# Last-Event-ID after the guard too; only bytes that are not UTF-8 make that one a 400.
ENTRY_POINTS = {
    "snapshot": ("GET", "/api/rooms/r", {}, None),
    "sse": ("GET", "/api/rooms/r/events", {}, None),
    "ws": ("GET", "/api/rooms/r/ws", UPGRADE, None),
    "prompt": ("POST", "/api/rooms/r/prompts", {}, {"content": "hi"}),
    "cancel": ("POST", "/api/rooms/r/turns/t1/cancel", {}, None),
    "tap": ("POST", "/v1/chat/completions", {"X-Room": "r"}, TAP_BODY),
    "models": ("GET", "/v1/models", {"X-Room": "r"}, None),
}
MALFORMED_AFTER_THE_GUARD = {
    "ws": ("GET", "/api/rooms/r/ws?epoch=e&since=x", UPGRADE, None),
    "prompt": ("POST", "/api/rooms/r/prompts", {}, {"content": 1}),
    "tap": ("POST", "/v1/chat/completions", {"X-Room": "r"}, {"messages": "no"}),
}
PROMPTING = {"prompt", "cancel", "tap", "models"}


def bearer(room: str = "r", role: str = "publisher") -> dict[str, str]:
    """An Authorization header with a token signed with the test servers' secret."""
    return {"Authorization": f"Bearer {mint_token(AUTH_SECRET, room, role, 60)}"}  # type: ignore[arg-type]


@pytest.fixture
async def server(make_server: ServerFactory) -> TestServer:
    """A server in token mode."""
    return await make_server(auth__mode="token")


async def refused(
    session: aiohttp.ClientSession,
    server: TestServer,
    entry: tuple[str, str, dict[str, str], object],
    extra: dict[str, str],
) -> tuple[int, str]:
    """The status and error code that ``entry`` answers with ``extra`` headers."""
    method, path, headers, body = entry
    async with session.request(
        method, server.make_url(path), json=body, headers={**headers, **extra}
    ) as resp:
        return resp.status, (await resp.json())["error"]["code"]


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
async def test_origin_comes_before_the_token_and_the_role(
    server: TestServer, session: aiohttp.ClientSession, upstream: FakeUpstream, name: str
) -> None:
    """A foreign Origin is 403 whatever the token.

    None, a bad one, a viewer's, another room's; nothing reaches the upstream.
    """
    foreign = {"Origin": "https://evil.example"}
    for token in ({}, {"Authorization": "Bearer garbage"}, bearer(role="viewer"), bearer("x")):
        assert await refused(session, server, ENTRY_POINTS[name], {**foreign, **token}) == (
            403,
            "forbidden",
        ), token
    assert upstream.requests == []


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
async def test_the_token_comes_before_the_room_and_the_role(
    server: TestServer, session: aiohttp.ClientSession, name: str
) -> None:
    """No token or a bad one is 401 everywhere; a token for another room is 403.

    A viewer's is 403 exactly where a role that prompts is needed.
    """
    entry = ENTRY_POINTS[name]
    assert await refused(session, server, entry, {}) == (401, "unauthorized")
    assert await refused(session, server, entry, {"Authorization": "Bearer x"}) == (
        401,
        "unauthorized",
    )
    assert await refused(session, server, entry, bearer("x", "viewer")) == (403, "forbidden")
    if name in PROMPTING:
        assert await refused(session, server, entry, bearer(role="viewer")) == (403, "forbidden")


@pytest.mark.parametrize("name", list(MALFORMED_AFTER_THE_GUARD))
async def test_the_guard_comes_before_the_rest_of_the_request(
    server: TestServer, session: aiohttp.ClientSession, name: str
) -> None:
    """A request also malformed after the room name is refused for its token first.

    Malformed means a bad resume point or body: 401 and 403 come first, and the rest only
    with a good token.
    """
    entry = MALFORMED_AFTER_THE_GUARD[name]
    assert await refused(session, server, entry, {}) == (401, "unauthorized")
    assert await refused(session, server, entry, bearer("x")) == (403, "forbidden")
    assert await refused(session, server, entry, bearer()) == (400, "bad_request")
