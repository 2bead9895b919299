"""Upstream HTTP errors before the stream, through the real SDK path (aioresponses mocks).

The server's upstream points at ``http://upstream.invalid/v1``; aioresponses answers its
``/chat/completions`` and lets the test's own requests to 127.0.0.1 through.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from yarl import URL

from .aioresponses_shim import MockUpstream
from .conftest import API_KEY, ServerFactory, viewer
from .fake_upstream import ANSWER, text_stream
from .viewer import Viewer

BASE_URL = "http://upstream.invalid/v1"
CHAT_URL = f"{BASE_URL}/chat/completions"
FULL = "".join(ANSWER)


@pytest.fixture
def mocked() -> Iterator[MockUpstream]:
    """An aioresponses mock for the upstream; requests to the fanout server pass through."""
    mock = MockUpstream(passthrough=["http://127.0.0.1"])
    with mock:
        yield mock


def sse_body() -> str:
    """A whole successful chat-completions stream as one SSE body."""
    out = []
    for item in text_stream(ANSWER):
        out.append(item if isinstance(item, str) else f"data: {json.dumps(item)}\n\n")
    return "".join(out)


def openai_error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@dataclass
class Failure:
    """One HTTP error the upstream answers before any stream, and the code it must become."""

    status: int
    code: str
    payload: dict[str, Any] | None = None
    body: str = ""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


FAILURES = [
    pytest.param(
        Failure(
            400,
            "invalid_request_error",
            openai_error(
                "Invalid value for 'temperature': expected at most 2.",
                "invalid_request_error",
                None,
            ),
        ),
        id="400-type-when-code-is-null",
    ),
    pytest.param(
        Failure(
            401,
            "invalid_api_key",
            openai_error(
                f"Incorrect API key provided: {API_KEY}. Sent as 'Authorization: Bearer "
                f"{API_KEY}'. Also tried Bearer sk-proj-otherkey987654321.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        ),
        id="401-message-with-the-key",
    ),
    pytest.param(
        Failure(
            401,
            "upstream_error",
            body=f"Unauthorized: bad key {API_KEY} (Bearer {API_KEY})",
            content_type="text/plain",
        ),
        id="401-plain-text-with-the-key",
    ),
    pytest.param(
        Failure(
            403,
            "unsupported_country_region_territory",
            openai_error(
                "Country, region, or territory not supported",
                "request_forbidden",
                "unsupported_country_region_territory",
            ),
        ),
        id="403",
    ),
    pytest.param(
        Failure(
            404,
            "model_not_found",
            openai_error(
                "The model `gpt-9` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            ),
        ),
        id="404",
    ),
    pytest.param(
        Failure(
            429,
            "rate_limit_exceeded",
            openai_error(
                "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3.",
                "requests",
                "rate_limit_exceeded",
            ),
            headers={"retry-after": "7", "x-ratelimit-remaining-requests": "0"},
        ),
        id="429-retry-after",
    ),
    pytest.param(
        Failure(
            500,
            "server_error",
            openai_error(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
        ),
        id="500",
    ),
    pytest.param(
        Failure(
            502,
            "upstream_error",
            body="<html><body><h1>502 Bad Gateway</h1></body></html>",
            content_type="text/html",
        ),
        id="502-non-json-body",
    ),
]


def frames_of(v: Viewer, turn_id: str) -> list[str]:
    """The types of a turn's sequenced frames, in order."""
    return [f["type"] for f in v.frames if f.get("turn") == turn_id]


@pytest.mark.parametrize("failure", FAILURES)
async def test_http_error_fails_the_turn_and_the_room_goes_on(
    failure: Failure,
    make_server: ServerFactory,
    mocked: MockUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """An upstream HTTP error ends the turn failed, scrubbed, no delta; the next prompt works."""
    server = await make_server(upstream__base_url=BASE_URL)
    mocked.post(
        CHAT_URL,
        status=failure.status,
        payload=failure.payload,
        body=failure.body,
        content_type=failure.content_type,
        headers=failure.headers,
    )
    mocked.post(CHAT_URL, status=200, body=sse_body(), content_type="text/event-stream")
    v = await viewer(session, server, "errs")
    await v.send({"type": "prompt", "content": "hi", "id": "p-1"})
    turn = await v.wait_turn_end()
    start = next(f for f in v.frames if f["type"] == "turn.start")
    assert frames_of(v, start["turn"]) == ["turn.start", "turn.end"]
    end = turn.end
    assert end is not None
    assert end["status"] == turn.status == "failed"
    assert end["usage"] is None
    assert end["error"]["code"] == failure.code
    message = end["error"]["message"]
    assert message
    assert API_KEY not in message
    assert "sk-" not in message
    assert "Bearer sk" not in message
    assert v.errors == []
    snap = await (await session.get(server.make_url("/api/rooms/errs"))).json()
    assert snap["turns"][0]["status"] == "failed"
    assert snap["turns"][0]["error"] == end["error"]
    # Exactly one attempt (max_retries=0), then the room takes the next prompt.
    assert len(mocked.requests[("POST", URL(CHAT_URL))]) == 1
    await v.send({"type": "prompt", "content": "again", "id": "p-2"})
    await v.wait(lambda x: len(x.turns) == 2 and all(t.end for t in x.turns.values()))
    second = list(v.turns.values())[-1]
    assert second.status == "completed"
    assert second.text() == FULL
    assert v.problems == []
    assert len(mocked.requests[("POST", URL(CHAT_URL))]) == 2
    await v.close()


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_connection_refused_is_upstream_unreachable(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """An upstream that refuses the connection ends the turn failed, upstream_unreachable."""
    server = await make_server(upstream__base_url=f"http://127.0.0.1:{closed_port()}/v1")
    v = await viewer(session, server, "refused")
    await v.send({"type": "prompt", "content": "hi"})
    turn = await v.wait_turn_end()
    start = next(f for f in v.frames if f["type"] == "turn.start")
    assert frames_of(v, start["turn"]) == ["turn.start", "turn.end"]
    assert turn.status == "failed"
    assert turn.end is not None
    assert turn.end["error"]["code"] == "upstream_unreachable"
    assert turn.end["error"]["message"]
    assert v.problems == []
    await v.close()


async def test_http_snapshot_of_a_failed_turn_over_post(
    make_server: ServerFactory, mocked: MockUpstream, session: aiohttp.ClientSession
) -> None:
    """A POSTed prompt whose upstream fails still answers 202; the snapshot shows it failed."""
    server: TestServer = await make_server(upstream__base_url=BASE_URL)
    mocked.post(
        CHAT_URL,
        status=503,
        payload=openai_error("Service overloaded", "server_error", "overloaded"),
    )
    v = await viewer(session, server, "posted")
    resp = await session.post(server.make_url("/api/rooms/posted/prompts"), json={"content": "x"})
    assert resp.status == 202
    turn_id = (await resp.json())["turn"]
    turn = await v.wait_turn_end(turn_id)
    assert turn.status == "failed"
    assert turn.end is not None
    assert turn.end["error"]["code"] == "overloaded"
    assert v.problems == []
    await v.close()
