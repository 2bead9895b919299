"""The Responses API tap's refusals and failures; after each, the room still works.

4xx before any upstream request; upstream errors passed on; failure events scrubbed.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from .conftest import API_KEY, viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream
from .room_health import assert_room_healthy

TIMEOUT = 10.0
USER_ITEM = {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}


def oa(kind: str, seq: int, **fields: Any) -> str:
    """One Responses event as OpenAI writes it: ``event:`` is the type, ``data:`` the JSON."""
    data = json.dumps({"type": kind, "sequence_number": seq, **fields})
    return f"event: {kind}\ndata: {data}\n\n"


def opening(text: str = "Hel") -> list[str]:
    """``response.created``, a message item, and one text delta."""
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    return [
        oa("response.created", 0, response=response),
        oa("response.output_item.added", 1, output_index=0, item=item),
        oa("response.output_text.delta", 2, item_id="msg_1", output_index=0, delta=text),
    ]


async def post(
    session: aiohttp.ClientSession,
    server: TestServer,
    body: bytes | dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, aiohttp.ClientResponse]:
    """POST /v1/responses; its status, whole body and response."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    room = {"X-Room": "r"} if headers is None else headers
    async with asyncio.timeout(TIMEOUT):
        resp = await session.post(
            server.make_url("/v1/responses"),
            data=io.BytesIO(data),  # a large body as a stream, not one write
            headers={"Content-Type": "application/json", **room},
        )
        return resp.status, await resp.read(), resp


@pytest.mark.parametrize(
    "headers", [{}, {"X-Room": ""}, {"X-Room": "-bad"}, {"X-Room": "a/b"}, {"X-Room": "x" * 300}]
)
async def test_no_usable_x_room_is_400(
    server: TestServer,
    session: aiohttp.ClientSession,
    upstream: FakeUpstream,
    headers: dict[str, str],
) -> None:
    """Without X-Room, or with a bad room name: 400 bad_request, no upstream request."""
    status, body, _ = await post(session, server, {"model": "m", "input": "x"}, headers)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert upstream.requests == []
    await assert_room_healthy(session, server, "r", upstream)


HOSTILE: list[tuple[bytes, int, str]] = [
    (b"{}", 400, "'input'"),
    (b'{"input": 3}', 400, "'input'"),
    (b'{"input": null}', 400, "'input'"),
    (b'{"input": {"role": "user", "content": "x"}}', 400, "'input'"),
    (b'{"input": []}', 400, "'input'"),
    (b'{"input": ["hi"]}', 400, "'input'"),
    (b'{"input": [null]}', 400, "'input'"),
    (b'{"input": [{"role": "user", "content": "x"}, 7]}', 400, "'input'"),
    (b'{"input": "x", "model": 3}', 400, "'model'"),
    (b'{"input": "x", "model": ""}', 400, "'model'"),
    (b'{"input": "x", "stream": "yes"}', 400, "'stream'"),
    (b'{"input": "x", "stream": 1}', 400, "'stream'"),
    (b'{"input": "\\ud800"}', 400, "'input' is not valid Unicode"),
    (b'{"input": "ok \\udfff tail"}', 400, "'input' is not valid Unicode"),
    (
        b'{"input": [{"role": "user", "content": [{"type": "input_text", "text": "a\\ud83d"}]}]}',
        400,
        "'input[0].content[0].text' is not valid Unicode",
    ),
    (b'{"input": "x", "instructions": "\\udc00"}', 400, "'instructions'"),
    (b'{"input": "x", "temperature": NaN}', 400, "'temperature' is not a finite"),
    (b'{"input": "x", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "JSON"),
    (b"[1, 2]", 400, ""),
    (b"not json", 400, ""),
    (b'{"input": "\xff"}', 400, "UTF-8"),
    (json.dumps({"input": "x" * 40_000}).encode(), 413, "characters"),
    (json.dumps({"input": [{**USER_ITEM, "content": "y" * 40_000}]}).encode(), 413, "characters"),
    (json.dumps({"input": "z" * (2 << 20)}).encode(), 413, "too large"),
]


@pytest.mark.parametrize(("body", "status", "names"), HOSTILE)
async def test_hostile_bodies_are_refused_before_any_upstream_request(
    server: TestServer,
    session: aiohttp.ClientSession,
    upstream: FakeUpstream,
    body: bytes,
    status: int,
    names: str,
) -> None:
    """Wrong types, lone surrogates, bad JSON, huge: a 4xx naming the field; the room works."""
    got, raw, _ = await post(session, server, body)
    assert got == status, raw[:200]
    error = json.loads(raw)["error"]
    assert error["code"] == ("too_large" if status == 413 else "bad_request")
    assert names in error["message"]
    assert upstream.requests == []
    await assert_room_healthy(session, server, "r", upstream)


@pytest.mark.parametrize("status", [429, 500])
@pytest.mark.parametrize("stream", [True, False])
async def test_upstream_http_errors_are_passed_on_scrubbed(
    server: TestServer,
    session: aiohttp.ClientSession,
    upstream: FakeUpstream,
    status: int,
    stream: bool,
) -> None:
    """An upstream 429 or 500: its status, its error JSON scrubbed, Retry-After; turn failed."""
    code = "rate_limit_exceeded" if status == 429 else "server_error"
    upstream.always(
        Script(
            status=status,
            headers={"retry-after": "3"},
            error_body={"error": {"message": f"no, key {API_KEY}", "type": "t", "code": code}},
        )
    )
    watcher = await viewer(session, server, "r")
    got, raw, resp = await post(session, server, {"input": "x", "stream": stream})
    assert got == status
    error = json.loads(raw)["error"]
    assert error["code"] == code
    assert API_KEY not in raw.decode()
    assert "[redacted]" in error["message"]
    assert resp.headers["Retry-After"] == "3"
    turn = await watcher.wait_turn_end()
    assert turn.status == "failed"
    assert turn.end is not None
    assert turn.end["error"]["code"] == code
    assert len(upstream.requests) == 1
    assert upstream.requests[0]["_path"] == "/v1/responses"
    await watcher.close()
    await assert_room_healthy(session, server, "r", upstream)


FAILURES = [
    oa("error", 3, code="server_error", message=f"boom with {API_KEY}", param=None),
    oa(
        "response.failed",
        3,
        response={
            "id": "resp_1",
            "object": "response",
            "status": "failed",
            "output": [],
            "error": {"code": "server_error", "message": f"boom with {API_KEY}"},
        },
    ),
]


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failure_event_reaches_the_caller_with_the_rooms_scrubbed_error(
    server: TestServer, session: aiohttp.ClientSession, upstream: FakeUpstream, failure: str
) -> None:
    """A mid-stream error or response.failed ends the caller's stream with the room's error."""
    after = oa("response.output_text.delta", 4, item_id="msg_1", delta="late")
    upstream.always(Script(chunks=[*opening(), failure, after]))
    watcher = await viewer(session, server, "r")
    got, raw, resp = await post(session, server, {"input": [USER_ITEM], "stream": True})
    assert got == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    text = raw.decode()
    assert API_KEY not in text
    assert "late" not in text  # nothing after the end of the turn
    blocks = [b for b in text.split("\n\n") if b]
    assert blocks[: len(opening())] == [b.rstrip("\n") for b in opening()]  # as sent
    kind, data = blocks[-1].split("\n")
    last = json.loads(data.removeprefix("data: "))
    turn = await watcher.wait_turn_end()
    assert turn.text() == "Hel"
    assert turn.end is not None
    error = turn.end["error"]
    assert "[redacted]" in error["message"]
    if kind == "event: error":
        assert last == {**error, "type": "error", "param": None, "sequence_number": 3}
    else:
        assert kind == "event: response.failed"
        assert last["response"]["error"] == error
    await watcher.close()
    await assert_room_healthy(session, server, "r", upstream)


@pytest.mark.parametrize("stream", [True, False])
async def test_a_stream_that_opens_with_an_error_is_a_502(
    server: TestServer, session: aiohttp.ClientSession, upstream: FakeUpstream, stream: bool
) -> None:
    """Nothing relayed yet when the turn fails: a 502 with the error JSON, never an empty 200."""
    upstream.always(Script(chunks=[oa("error", 0, code="server_error", message="down")]))
    got, raw, _ = await post(session, server, {"input": "x", "stream": stream})
    assert got == 502
    assert json.loads(raw)["error"] == {
        "code": "upstream_error",
        "message": "server_error: down",
    }
    await assert_room_healthy(session, server, "r", upstream)


async def test_a_responses_tap_while_a_turn_streams_is_409(
    server: TestServer, session: aiohttp.ClientSession, upstream: FakeUpstream
) -> None:
    """A room already streaming: 409 turn_in_progress, as for the chat tap."""
    upstream.always(Script(chunks=text_stream(ANSWER * 30), gap=0.02))
    watcher = await viewer(session, server, "busy")
    await watcher.send({"type": "prompt", "content": "long"})
    await watcher.wait(lambda v: any(f["type"] == "delta" for f in v.frames))
    got, raw, _ = await post(session, server, {"input": "x"}, {"X-Room": "busy"})
    assert got == 409
    assert json.loads(raw)["error"]["code"] == "turn_in_progress"
    assert len(upstream.requests) == 1
    (start,) = [f for f in watcher.frames if f["type"] == "turn.start"]
    await watcher.send({"type": "cancel", "turn": start["turn"]})
    assert (await watcher.wait_turn_end(start["turn"])).status == "cancelled"
    await watcher.close()
    await assert_room_healthy(session, server, "busy", upstream)
