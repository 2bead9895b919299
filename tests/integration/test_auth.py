"""auth.mode = "token": tokens and roles on every endpoint that needs them; origins."""

from __future__ import annotations

import time

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer

from server.http.auth import mint_token

from .conftest import AUTH_SECRET, ServerFactory
from .fake_upstream import FakeUpstream
from .sse_viewer import SSEViewer


def token(room: str = "r", role: str = "publisher", ttl: float = 60) -> str:
    """A token signed with the test servers' secret."""
    return mint_token(AUTH_SECRET, room, role, ttl)  # type: ignore[arg-type]


def bearer(value: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
async def server(make_server: ServerFactory) -> TestServer:
    """A server in token mode."""
    return await make_server(auth__mode="token")


TAP_BODY = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
EXPIRED = jwt.encode(
    {"room": "r", "role": "admin", "sub": "x", "exp": int(time.time()) - 10}, AUTH_SECRET
)
FORGED = jwt.encode(  # valid for a day, but signed with another secret
    {"room": "r", "role": "admin", "sub": "x", "exp": int(time.time()) + 86400}, "x" * 40
)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/rooms/r", None),
        ("GET", "/api/rooms/r/events", None),
        ("POST", "/api/rooms/r/prompts", {"content": "hi"}),
        ("POST", "/api/rooms/r/turns/t1/cancel", None),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        ),
    ],
)
@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        (bearer("not-a-jwt"), 401, "unauthorized"),
        (bearer(EXPIRED), 401, "unauthorized"),
        (bearer(FORGED), 401, "unauthorized"),
        (bearer(token(room="other", ttl=86400)), 403, "forbidden"),
    ],
)
async def test_endpoints_refuse_missing_bad_expired_and_foreign_tokens(
    server: TestServer,
    session: aiohttp.ClientSession,
    upstream: FakeUpstream,
    method: str,
    path: str,
    body: object,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    """No token, a bad, forged or expired one: 401; a token for another room: 403."""
    headers = {**headers, "X-Room": "r"}
    resp = await session.request(method, server.make_url(path), json=body, headers=headers)
    assert resp.status == status
    assert (await resp.json())["error"]["code"] == code
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/rooms/r/prompts", {"content": "hi"}),
        ("POST", "/api/rooms/r/turns/t1/cancel", None),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        ),
    ],
)
async def test_viewers_may_not_prompt_or_cancel(
    server: TestServer,
    session: aiohttp.ClientSession,
    upstream: FakeUpstream,
    method: str,
    path: str,
    body: object,
) -> None:
    """A viewer token is 403 forbidden on prompts, cancel and the tap."""
    headers = {**bearer(token(role="viewer")), "X-Room": "r"}
    resp = await session.request(method, server.make_url(path), json=body, headers=headers)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    assert upstream.requests == []


async def test_valid_tokens_are_accepted_where_their_role_allows(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """Viewer watches (snapshot, SSE via ?token=); publisher and '*'/admin prompt."""
    viewer_token = token(role="viewer")
    resp = await session.get(server.make_url("/api/rooms/r"), headers=bearer(viewer_token))
    assert resp.status == 200
    sse = await SSEViewer(session, str(server.make_url("/api/rooms/r/events"))).connect(
        f"?token={viewer_token}"
    )
    assert sse.frames[0]["role"] == "viewer"
    await sse.close()
    for good in (token(role="publisher"), token(room="*"), token(room="x", role="admin")):
        resp = await session.post(
            server.make_url("/api/rooms/r/prompts"),
            json={"content": "hi", "id": good[-12:]},
            headers=bearer(good),
        )
        assert resp.status in (202, 409)
    resp = await session.get(server.make_url("/api/rooms"))
    assert resp.status == 200  # no token needed for the list, pages, health, metrics
    assert (await session.get(server.make_url("/healthz"))).status == 200


@pytest.mark.parametrize("path", ["/api/rooms/r/prompts", "/api/rooms/r/events"])
async def test_foreign_origins_are_refused(
    make_server: ServerFactory, session: aiohttp.ClientSession, path: str
) -> None:
    """A browser Origin that is neither the server's nor allowed is 403; an allowed one passes."""
    server = await make_server(server__allowed_origins=["https://app.example"])
    method = "POST" if path.endswith("prompts") else "GET"
    body = {"content": "hi"} if method == "POST" else None
    resp = await session.request(
        method, server.make_url(path), json=body, headers={"Origin": "https://evil.example"}
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    ok = await session.request(
        method, server.make_url(path), json=body, headers={"Origin": "https://app.example"}
    )
    assert ok.status in (200, 202)
    ok.close()
