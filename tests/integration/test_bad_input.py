"""Bad input over the WebSocket and HTTP.

The right error, the right close code, and the room goes on working for everyone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from .conftest import ServerFactory, viewer, ws_url
from .fake_upstream import ANSWER, FakeUpstream, Script
from .viewer import Viewer

FULL = "".join(ANSWER)
MAX_PROMPT = 100
FAST = Script(gap=0.0)


@pytest.fixture
async def held(upstream: FakeUpstream) -> AsyncIterator[FakeUpstream]:
    """The fake upstream holding every stream after its first chunk until the test ends."""
    upstream.always(FAST)
    upstream.release.clear()
    try:
        yield upstream
    finally:
        upstream.release.set()


async def all_ended(v: Viewer, count: int) -> None:
    """Wait until the viewer has seen ``count`` turns, all ended."""
    await v.wait(lambda x: len(x.turns) == count and all(t.end for t in x.turns.values()))


async def error_body(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The ``error`` object of a JSON error response."""
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return dict(body["error"])


# --- WebSocket frames that are refused with an error frame --------------------------------

BAD_FRAMES = [
    pytest.param("{type: prompt", "bad_request", None, id="invalid-json"),
    pytest.param('{"type": "prompt", "content": "hi"', "bad_request", None, id="truncated-json"),
    pytest.param([{"type": "prompt", "content": "hi"}], "bad_request", None, id="json-array"),
    pytest.param('"prompt"', "bad_request", None, id="json-string"),
    pytest.param({"type": "dance", "id": "u-1"}, "bad_request", "u-1", id="unknown-type"),
    pytest.param({"content": "hi", "id": "u-2"}, "bad_request", "u-2", id="missing-type"),
    pytest.param(
        {"type": "prompt", "content": ["hi"], "id": "c-1"}, "bad_request", "c-1", id="content-list"
    ),
    pytest.param(
        {"type": "prompt", "content": 5, "id": "c-2"}, "bad_request", "c-2", id="content-int"
    ),
    pytest.param({"type": "prompt", "id": "c-3"}, "bad_request", "c-3", id="content-missing"),
    pytest.param({"type": "prompt", "content": "", "id": "e-1"}, "bad_request", "e-1", id="empty"),
    pytest.param(
        {"type": "prompt", "content": " \n\t ", "id": "e-2"}, "bad_request", "e-2", id="whitespace"
    ),
    pytest.param(
        {"type": "prompt", "content": "x" * (MAX_PROMPT + 1), "id": "l-1"},
        "too_large",
        "l-1",
        id="content-over-limit",
    ),
    pytest.param(
        {"type": "prompt", "content": "hi", "id": "o-1", "options": {"frequency_penalty": 0.5}},
        "bad_request",
        "o-1",
        id="unknown-option",
    ),
    pytest.param(
        {"type": "prompt", "content": "hi", "id": "o-2", "options": {"temperature": "hot"}},
        "bad_request",
        "o-2",
        id="temperature-string",
    ),
    pytest.param(
        {"type": "prompt", "content": "hi", "id": "o-3", "options": {"n": 0}},
        "bad_request",
        "o-3",
        id="n-zero",
    ),
    pytest.param(
        {"type": "prompt", "content": "hi", "id": "o-4", "options": {"max_tokens": True}},
        "bad_request",
        "o-4",
        id="max_tokens-bool",
    ),
    pytest.param(
        {"type": "prompt", "content": "hi", "id": "o-5", "options": ["temperature"]},
        "bad_request",
        "o-5",
        id="options-not-object",
    ),
    pytest.param(
        {"type": "prompt", "content": "hi", "id": "m-1", "model": 4},
        "bad_request",
        "m-1",
        id="model-int",
    ),
    pytest.param({"type": "prompt", "content": "hi", "id": 7}, "bad_request", None, id="id-int"),
    pytest.param({"type": "cancel", "id": "k-1"}, "bad_request", "k-1", id="cancel-without-turn"),
    pytest.param(
        {"type": "cancel", "turn": 5, "id": "k-2"}, "bad_request", "k-2", id="cancel-turn-int"
    ),
    pytest.param(
        {"type": "cancel", "turn": "t-nope", "id": "k-3"}, "not_found", "k-3", id="cancel-unknown"
    ),
    pytest.param(
        {"type": "cancel", "turn": "t-nope"}, "not_found", None, id="cancel-unknown-no-id"
    ),
]


@pytest.mark.parametrize(("frame", "code", "ref"), BAD_FRAMES)
async def test_bad_frame_gets_an_error_and_the_connection_goes_on(
    frame: dict[str, Any] | list[Any] | str,
    code: str,
    ref: str | None,
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """A refused frame gets one error frame (code, ref) for its sender only; prompting goes on."""
    server = await make_server(limits__max_prompt_chars=MAX_PROMPT)
    upstream.always(FAST)
    sender = await viewer(session, server, "bad")
    watcher = await viewer(session, server, "bad")
    await sender.send(frame if isinstance(frame, str) else json.dumps(frame))
    await sender.wait(lambda x: len(x.errors) == 1)
    error = sender.errors[0]
    assert error["code"] == code
    assert error["ref"] == ref
    assert error["message"]
    assert error["temporary"] is False
    assert set(error) == {"type", "code", "message", "temporary", "retry_after_ms", "ref"}
    assert upstream.requests == []
    assert not any(f["type"] == "turn.start" for f in sender.frames)
    # The connection stays open: a valid prompt on it works for every viewer.
    assert sender.ws is not None
    assert not sender.ws.closed
    await sender.send({"type": "prompt", "content": "now a good one", "id": "good-1"})
    for v in (sender, watcher):
        turn = await v.wait_turn_end()
        assert turn.status == "completed"
        assert turn.text() == FULL
        assert v.problems == []
    assert len(sender.errors) == 1
    assert watcher.errors == []
    assert len(upstream.requests) == 1
    for v in (sender, watcher):
        await v.close()


async def test_unknown_top_level_fields_are_ignored(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A prompt with extra top-level fields streams like any other, without an error."""
    upstream.always(FAST)
    v = await viewer(session, server, "extra")
    await v.send(
        {"type": "prompt", "content": "hi", "id": "x-1", "priority": "high", "meta": {"a": [1]}}
    )
    turn = await v.wait_turn_end()
    assert turn.status == "completed"
    assert turn.text() == FULL
    assert v.errors == []
    assert v.problems == []
    assert len(upstream.requests) == 1
    await v.close()


async def test_second_prompt_while_streaming_is_turn_in_progress(
    server: TestServer, held: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A prompt while a turn streams gets turn_in_progress (temporary, ref); nothing starts."""
    a = await viewer(session, server, "busy")
    b = await viewer(session, server, "busy")
    await a.send({"type": "prompt", "content": "first", "id": "p-1"})
    await b.wait(lambda x: any(f["type"] == "turn.start" for f in x.frames))
    await b.send({"type": "prompt", "content": "second", "id": "p-2"})
    await b.wait(lambda x: len(x.errors) == 1)
    error = b.errors[0]
    assert error["code"] == "turn_in_progress"
    assert error["temporary"] is True
    assert error["ref"] == "p-2"
    assert a.errors == []
    held.release.set()
    for v in (a, b):
        turn = await v.wait_turn_end()
        assert turn.text() == FULL
        assert len(v.turns) == 1
        assert v.problems == []
    assert len(held.requests) == 1
    # Once it ended, the same viewer's next prompt starts a turn.
    await b.send({"type": "prompt", "content": "second", "id": "p-3"})
    await all_ended(a, 2)
    assert list(a.turns.values())[-1].text() == FULL
    for v in (a, b):
        await v.close()


# --- frames that close the connection -------------------------------------------------------


async def test_too_many_bad_frames_close_4502(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """With max_bad_frames=3, two bad frames leave the socket open and the third closes 4502."""
    server = await make_server(limits__max_bad_frames=3)
    v = await viewer(session, server, "noisy")
    for n in (1, 2):
        await v.send("not json")
        await v.wait(lambda x, n=n: len(x.errors) == n)
    assert v.ws is not None
    assert not v.ws.closed
    await v.send({"type": "nonsense", "id": "z-3"})
    await v.wait(lambda x: x.close_code is not None)
    assert v.close_code == 4502
    assert [e["code"] for e in v.errors] == ["bad_request"] * 3
    assert v.errors[-1]["ref"] == "z-3"
    await v.close()


async def test_binary_frame_closes_1003(server: TestServer, session: aiohttp.ClientSession) -> None:
    """A binary frame closes the connection with 1003."""
    v = await viewer(session, server, "binary")
    assert v.ws is not None
    await v.ws.send_bytes(json.dumps({"type": "prompt", "content": "hi"}).encode())
    await v.wait(lambda x: x.close_code is not None)
    assert v.close_code == 1003
    await v.close()


async def test_frame_over_the_size_limit_closes_1009(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """With max_frame_bytes=1024 a frame just under it works and one over it closes 1009."""
    server = await make_server(limits__max_frame_bytes=1024)
    upstream.always(FAST)
    v = await viewer(session, server, "big")
    await v.send({"type": "prompt", "content": "y" * 900})
    assert (await v.wait_turn_end()).text() == FULL
    await v.send({"type": "prompt", "content": "x" * 2000})
    await v.wait(lambda x: x.close_code is not None)
    assert v.close_code == 1009
    assert len(upstream.requests) == 1
    await v.close()


# --- refused before the upgrade ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["-bad", "_bad", ".bad", "a" * 65, "sp%20ace", "caf%C3%A9", "semi;colon"]
)
async def test_bad_room_name_is_400_before_the_upgrade(
    name: str, server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A bad room name gets HTTP 400 bad_request JSON, on the WebSocket and the snapshot."""
    url = ws_url(server, name)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url)
    assert refused.value.status == 400
    async with session.get(url) as resp:
        assert resp.status == 400
        assert (await error_body(resp))["code"] == "bad_request"
    async with session.get(server.make_url(f"/api/rooms/{name}")) as resp:
        assert resp.status == 400
        assert (await error_body(resp))["code"] == "bad_request"
    rooms = await (await session.get(server.make_url("/api/rooms"))).json()
    assert rooms == {"rooms": []}


async def test_longest_room_name_is_fine(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A 64-character room name with every allowed kind of character is accepted."""
    name = "A0" + "b_.-" * 15 + "z9"
    assert len(name) == 64
    v = await viewer(session, server, name)
    assert v.frames[0]["room"] == name
    await v.close()


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", ""])
async def test_bad_since_is_400(
    since: str, server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A ``since`` that is not a non-negative integer gets 400 bad_request before the upgrade."""
    url = ws_url(server, "since") + f"?epoch=e1&since={since}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(url)
    assert refused.value.status == 400
    async with session.get(url) as resp:
        assert resp.status == 400
        assert (await error_body(resp))["code"] == "bad_request"


async def test_resume_with_a_wrong_epoch_gets_a_snapshot(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A resume naming another epoch is answered recovered:false with a full snapshot."""
    upstream.always(FAST)
    a = await viewer(session, server, "epoch")
    await a.send({"type": "prompt", "content": "hi"})
    await a.wait_turn_end()
    b = await viewer(session, server, "epoch", "?epoch=not-the-epoch&since=1")
    welcome, snapshot = b.frames[0], b.frames[1]
    assert welcome["type"] == "welcome"
    assert welcome["recovered"] is False
    assert welcome["epoch"] == a.epoch
    assert snapshot["type"] == "snapshot"
    assert snapshot["seq"] == welcome["seq"] == a.seq
    assert next(iter(b.turns.values())).text() == FULL
    assert b.problems == []
    for v in (a, b):
        await v.close()


async def test_room_limit_refuses_a_third_room_with_503(
    make_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """With max_rooms=2 and two rooms in use, a third gets 503 on HTTP and on the upgrade."""
    server = await make_server(rooms__max_rooms=2)
    one = await viewer(session, server, "one")
    two = await viewer(session, server, "two")
    async with session.get(server.make_url("/api/rooms/three")) as resp:
        assert resp.status == 503
        assert (await error_body(resp))["code"] == "unavailable"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(ws_url(server, "three"))
    assert refused.value.status == 503
    async with session.get(server.make_url("/api/rooms/one")) as resp:
        assert resp.status == 200
    rooms = await (await session.get(server.make_url("/api/rooms"))).json()
    assert sorted(r["name"] for r in rooms["rooms"]) == ["one", "two"]
    for v in (one, two):
        await v.close()


# --- HTTP ------------------------------------------------------------------------------------

BAD_POSTS = [
    pytest.param(b"{nope", 400, "bad_request", id="invalid-json"),
    pytest.param(b"[]", 400, "bad_request", id="json-array"),
    pytest.param(b"\xff\xfe{}", 400, "bad_request", id="not-utf8"),
    pytest.param(b"{}", 400, "bad_request", id="missing-content"),
    pytest.param(b'{"content": 3}', 400, "bad_request", id="content-int"),
    pytest.param(b'{"content": "  "}', 400, "bad_request", id="blank-content"),
    pytest.param(
        b'{"content": "hi", "options": {"logit_bias": {}}}', 400, "bad_request", id="unknown-option"
    ),
    pytest.param(
        b'{"content": "hi", "options": {"temperature": "hot"}}',
        400,
        "bad_request",
        id="temperature-string",
    ),
    pytest.param(b'{"content": "hi", "id": 3}', 400, "bad_request", id="id-int"),
    pytest.param(
        json.dumps({"content": "x" * (MAX_PROMPT + 1)}).encode(), 413, "too_large", id="too-long"
    ),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_POSTS)
async def test_bad_post_prompt_is_a_json_error(
    body: bytes,
    status: int,
    code: str,
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """A bad POST .../prompts body gets a JSON error with its status and code; nothing starts."""
    server = await make_server(limits__max_prompt_chars=MAX_PROMPT)
    resp = await session.post(
        server.make_url("/api/rooms/posts/prompts"),
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == status
    assert (await error_body(resp))["code"] == code
    assert upstream.requests == []
    snap = await (await session.get(server.make_url("/api/rooms/posts"))).json()
    assert snap["turns"] == []
    assert snap["seq"] == 0


async def test_post_prompt_while_streaming_is_409(
    server: TestServer, held: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A POSTed prompt while a turn streams gets 409 turn_in_progress; the first turn goes on."""
    url = server.make_url("/api/rooms/busy/prompts")
    v = await viewer(session, server, "busy")
    first = await session.post(url, json={"content": "first"})
    assert first.status == 202
    turn_id = (await first.json())["turn"]
    second = await session.post(url, json={"content": "second"})
    assert second.status == 409
    assert (await error_body(second))["code"] == "turn_in_progress"
    held.release.set()
    turn = await v.wait_turn_end(turn_id)
    assert turn.text() == FULL
    assert len(v.turns) == 1
    assert len(held.requests) == 1
    await v.close()


async def test_cancel_unknown_and_ended_turns(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Cancel answers 404 not_found for an unknown turn or room, 409 turn_ended for an ended one."""
    upstream.always(FAST)
    v = await viewer(session, server, "cx")
    resp = await session.post(server.make_url("/api/rooms/cx/turns/t-unknown/cancel"))
    assert resp.status == 404
    assert (await error_body(resp))["code"] == "not_found"
    resp = await session.post(server.make_url("/api/rooms/nowhere/turns/t-unknown/cancel"))
    assert resp.status == 404
    assert (await error_body(resp))["code"] == "not_found"
    started = await session.post(server.make_url("/api/rooms/cx/prompts"), json={"content": "hi"})
    turn_id = (await started.json())["turn"]
    assert (await v.wait_turn_end(turn_id)).status == "completed"
    resp = await session.post(server.make_url(f"/api/rooms/cx/turns/{turn_id}/cancel"))
    assert resp.status == 409
    assert (await error_body(resp))["code"] == "turn_ended"
    await v.send({"type": "cancel", "turn": turn_id, "id": "c-9"})
    await v.wait(lambda x: len(x.errors) == 1)
    assert v.errors[0]["code"] == "turn_ended"
    assert v.errors[0]["ref"] == "c-9"
    assert v.turns[turn_id].status == "completed"
    await v.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/nothing"), ("GET", "/api/rooms/a/b/c"), ("POST", "/nope")],
)
async def test_unknown_route_is_404_json(
    method: str, path: str, server: TestServer, session: aiohttp.ClientSession
) -> None:
    """An unknown route gets 404 with a JSON not_found error."""
    async with session.request(method, server.make_url(path)) as resp:
        assert resp.status == 404
        assert (await error_body(resp))["code"] == "not_found"


async def test_healthz(server: TestServer, session: aiohttp.ClientSession) -> None:
    """GET /healthz answers 200 {"status": "ok"}."""
    async with session.get(server.make_url("/healthz")) as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_rooms_list_shows_viewers_seq_epoch_streaming_and_turns(
    server: TestServer, held: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """GET /api/rooms lists each room with its viewers, seq, epoch, streaming flag and turns."""
    url = server.make_url("/api/rooms")
    a = await viewer(session, server, "listed")
    b = await viewer(session, server, "listed")
    assert await (await session.get(url)).json() == {
        "rooms": [
            {
                "name": "listed",
                "viewers": 2,
                "seq": 0,
                "epoch": a.epoch,
                "streaming": False,
                "turns": 0,
            }
        ]
    }
    await a.send({"type": "prompt", "content": "hi"})
    await a.wait(lambda x: any(f["type"] == "turn.start" for f in x.frames))
    (room,) = (await (await session.get(url)).json())["rooms"]
    assert room["streaming"] is True
    assert room["turns"] == 1
    assert room["seq"] == 1
    held.release.set()
    for v in (a, b):
        await v.wait_turn_end()
    (room,) = (await (await session.get(url)).json())["rooms"]
    assert room == {
        "name": "listed",
        "viewers": 2,
        "seq": a.seq,
        "epoch": a.epoch,
        "streaming": False,
        "turns": 1,
    }
    assert b.seq == a.seq
    for v in (a, b):
        await v.close()
