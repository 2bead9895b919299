"""Hostile client input at every edge.

Each is refused (or read) cleanly, nothing is logged with a traceback, and the room it touched still
welcomes a viewer and completes a prompt.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from .conftest import viewer, ws_url
from .fake_upstream import FakeUpstream
from .room_health import assert_room_healthy
from .sse_viewer import SSEViewer

TIMEOUT = 10.0
LONE = "\\ud800"  # the JSON escape of a lone surrogate, as a client sends it


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """No log record carries a traceback."""
    bad = [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert bad == []


async def room_is_healthy(
    session: aiohttp.ClientSession,
    server: TestServer,
    room: str,
    upstream: FakeUpstream | None = None,
) -> None:
    """Assert that ``room`` still welcomes a viewer and completes a prompt.

    Once ``room``'s turns have ended, a new viewer gets welcome + snapshot and a new prompt
    completes: ``assert_room_healthy`` on the fake upstream; on another upstream (the mock), the
    same check without comparing the answer's text.
    """
    async with asyncio.timeout(TIMEOUT):
        idle = await viewer(session, server, room)
        await idle.wait(lambda v: all(t.end is not None for t in v.turns.values()))
        await idle.close()
        if upstream is not None:
            await assert_room_healthy(session, server, room, upstream)
            return
        v = await viewer(session, server, room)
        assert [f["type"] for f in v.frames[:2]] == ["welcome", "snapshot"]
        await v.send({"type": "prompt", "content": "are you well?"})
        await v.wait(lambda v: any(f["type"] == "turn.start" for f in v.frames[2:]))
        start = next(f for f in v.frames[2:] if f["type"] == "turn.start")
        turn = await v.wait_turn_end(start["turn"])
        assert turn.status == "completed"
        assert v.problems == []
        await v.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record from INFO up."""
    caplog.set_level(logging.INFO)
    return caplog


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The ``error`` object of a JSON error response."""
    body = await resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


# --- text at the edge: POST bodies and WebSocket frames -------------------------------------

BAD_PROMPTS: dict[str, tuple[str, str]] = {
    "content": (f'{{"content": "hi {LONE} there"}}', "'content'"),
    "id": (f'{{"content": "hi", "id": "{LONE}"}}', "'id'"),
    "model": (f'{{"content": "hi", "model": "m{LONE}"}}', "'model'"),
    "options.stop": (
        f'{{"content": "hi", "options": {{"stop": ["{LONE}"]}}}}',
        "'options.stop[0]'",
    ),
    "key": (f'{{"content": "hi", "{LONE}": 1}}', "key"),
    "NaN": ('{"content": "hi", "options": {"temperature": NaN}}', "'options.temperature'"),
    "Infinity": ('{"content": "hi", "options": {"top_p": Infinity}}', "'options.top_p'"),
    "1e999": ('{"content": "hi", "options": {"seed": 1e999}}', "'options.seed'"),
}


@pytest.mark.parametrize(("body", "field"), BAD_PROMPTS.values(), ids=BAD_PROMPTS.keys())
async def test_post_prompt_with_bad_text_is_400_and_the_room_goes_on(
    body: str,
    field: str,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A lone surrogate or non-finite number in a POSTed prompt is 400 bad_request naming the field.

    No upstream request, no traceback, and the room works after.
    """
    resp = await session.post(
        server.make_url("/api/rooms/victim/prompts"),
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400
    error = await error_of(resp)
    assert error["code"] == "bad_request"
    assert field in error["message"]
    assert upstream.requests == []
    await room_is_healthy(session, server, "victim", upstream)
    no_tracebacks(logs)


@pytest.mark.parametrize(
    ("frame", "ref", "field"),
    [
        (f'{{"type": "prompt", "content": "a {LONE}", "id": "p1"}}', "p1", "'content'"),
        (f'{{"type": "prompt", "content": "a", "model": "{LONE}", "id": "p2"}}', "p2", "'model'"),
        (
            f'{{"type": "prompt", "content": "a", "options": {{"stop": "{LONE}"}}, "id": "p3"}}',
            "p3",
            "'options.stop'",
        ),
        (f'{{"type": "prompt", "content": "a", "id": "{LONE}"}}', None, "'id'"),
        (f'{{"type": "nope", "id": "{LONE}"}}', None, "'id'"),
        (f'{{"type": "cancel", "turn": "t", "id": "{LONE}"}}', None, "'id'"),
        ('{"type": "prompt", "content": "a", "note": NaN, "id": "n"}', "n", "'note'"),
    ],
    ids=["content", "model", "stop", "id", "id-bad-type", "cancel-id", "nan"],
)
async def test_frame_with_bad_text_gets_bad_request_and_the_socket_lives(
    frame: str,
    ref: str | None,
    field: str,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A frame with a lone surrogate or NaN gets bad_request; the socket goes on.

    A frame holding a lone surrogate (its id included) or NaN gets a bad_request error frame naming
    the field, ``ref`` only for a valid id; the same socket then prompts fine.
    """
    v = await viewer(session, server, "frames")
    await v.send(frame)
    await v.wait(lambda v: bool(v.errors))
    assert v.errors[0]["code"] == "bad_request"
    assert v.errors[0]["ref"] == ref
    assert field in v.errors[0]["message"]
    assert upstream.requests == []
    await v.send({"type": "prompt", "content": "still here?", "id": "after"})
    turn = await v.wait_turn_end()
    assert turn.status == "completed"
    assert v.close_code is None
    await v.close()
    await room_is_healthy(session, server, "frames", upstream)
    no_tracebacks(logs)


# --- bodies read whole ----------------------------------------------------------------------


async def raw_post(server: TestServer, path: str, head: str, parts: list[bytes]) -> tuple[int, Any]:
    """POST over a raw socket, the body in ``parts`` written 200 ms apart; status and JSON."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        async with asyncio.timeout(TIMEOUT):
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
                f"Content-Type: application/json\r\nConnection: close\r\n{head}\r\n".encode()
            )
            for i, part in enumerate(parts):
                if i:
                    # The reproduction itself: the rest of the body arrives later.
                    await asyncio.sleep(0.2)
                writer.write(part)
                await writer.drain()
            raw = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)


def chunked(*pieces: bytes) -> list[bytes]:
    """Each piece as one HTTP/1.1 chunk, then the last chunk."""
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


async def test_a_body_in_two_writes_is_read_whole(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A 31-byte prompt body sent in two TCP writes 200 ms apart is 202, not 400."""
    body = b'{"content": "hello over there"}'
    assert len(body) == 31
    status, answer = await raw_post(
        server, "/api/rooms/split/prompts", f"Content-Length: {len(body)}\r\n", [body[:9], body[9:]]
    )
    assert status == 202, answer
    assert set(answer) == {"turn", "seq"}
    await room_is_healthy(session, server, "split", upstream)
    no_tracebacks(logs)


async def test_a_chunked_body_is_read_whole(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A prompt body sent with Transfer-Encoding: chunked, in pieces, is 202."""
    status, answer = await raw_post(
        server,
        "/api/rooms/chunked/prompts",
        "Transfer-Encoding: chunked\r\n",
        chunked(b'{"content": ', b'"in chunks"}'),
    )
    assert status == 202, answer
    await room_is_healthy(session, server, "chunked", upstream)
    no_tracebacks(logs)


async def test_a_chunked_body_over_1_mib_is_413(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A chunked body (no Content-Length) over 1 MiB is 413 too_large as JSON."""
    filler = b" " * (600 * 1024)
    status, answer = await raw_post(
        server,
        "/api/rooms/huge/prompts",
        "Transfer-Encoding: chunked\r\n",
        chunked(b'{"content": "x",', filler, filler, b'"a": 1}'),
    )
    assert status == 413
    assert answer["error"]["code"] == "too_large"
    assert upstream.requests == []
    await room_is_healthy(session, server, "huge", upstream)
    no_tracebacks(logs)


async def test_a_400_kb_tap_body_from_the_sdk_is_read_whole(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """The openai SDK's 400 kB tap request (a long system message) is answered 200."""
    sdk = openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")),
        api_key="k",
        max_retries=0,
        default_headers={"X-Room": "bigtap"},
        http_client=openai.DefaultAioHttpClient(),
    )
    try:
        result = await sdk.chat.completions.create(
            model="m",
            messages=[
                {"role": "system", "content": "context " * 50_000},
                {"role": "user", "content": "summarise"},
            ],
        )
    finally:
        await sdk.close()
    assert result.choices[0].finish_reason == "stop"
    assert len(json.dumps(upstream.requests[0]["messages"])) > 400_000
    await room_is_healthy(session, server, "bigtap", upstream)
    no_tracebacks(logs)


# --- since and Last-Event-ID ----------------------------------------------------------------

BAD_SINCE = {"superscript": "%C2%B2", "arabic-indic": "%D9%A3", "5000 digits": "1" * 5000}


@pytest.mark.parametrize("since", BAD_SINCE.values(), ids=BAD_SINCE.keys())
async def test_since_that_int_would_choke_on_is_400(
    since: str,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """``since=²``, another script's digit or 5,000 digits.

    400 bad_request before the upgrade, never a 500.
    """
    url = ws_url(server, "since") + f"?epoch=e1&since={since}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url)
    assert refused.value.status == 400
    async with session.get(url) as resp:
        assert resp.status == 400
        assert (await error_of(resp))["code"] == "bad_request"
    await room_is_healthy(session, server, "since", upstream)
    no_tracebacks(logs)


@pytest.mark.parametrize(
    ("header", "query"),
    [
        ("ep:²", ""),
        ("ep:" + "1" * 5000, ""),
        (None, "?last_event_id=ep:%C2%B2"),
        (None, "?last_event_id=ep:" + "1" * 5000),
    ],
    ids=["header-superscript", "header-5000", "query-superscript", "query-5000"],
)
async def test_last_event_id_of_another_shape_is_no_resume(
    header: str | None,
    query: str,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A Last-Event-ID (header or query) whose seq is not 1-18 ASCII digits is no resume.

    The stream starts recovered:false with a snapshot, never a 500.
    """
    sse = SSEViewer(session, str(server.make_url("/api/rooms/lei/events")))
    async with asyncio.timeout(TIMEOUT):
        await sse.connect(query, last_event_id=header)
    assert [f["type"] for f in sse.frames[:2]] == ["welcome", "snapshot"]
    assert sse.frames[0]["recovered"] is False
    await sse.close()
    await room_is_healthy(session, server, "lei", upstream)
    no_tracebacks(logs)


async def raw_get(server: TestServer, path: str, headers: bytes) -> tuple[int, bytes]:
    """GET over a raw socket with raw header bytes; the status and the body."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        async with asyncio.timeout(TIMEOUT):
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n".encode()
                + headers
                + b"Connection: close\r\n\r\n"
            )
            raw = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_last_event_id_that_is_not_utf8_is_400(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A Last-Event-ID header holding bytes that are not UTF-8 is 400 bad_request naming it."""
    status, body = await raw_get(
        server, "/api/rooms/lei8/events", b"Last-Event-ID: e\xff\xfe:1\r\n"
    )
    assert status == 400
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request"
    assert "Last-Event-ID" in error["message"]
    await room_is_healthy(session, server, "lei8", upstream)
    no_tracebacks(logs)
