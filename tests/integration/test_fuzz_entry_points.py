"""Fuzzing every entry point: no input gets a 5xx or a traceback, and no room is left poisoned.

One server per test; hypothesis draws the examples (``fuzz_strategies``). After each example:
no 5xx answer, no ERROR record and no record with a traceback, and the room the example touched
accepts a new viewer and completes a new prompt (``fuzz_health``). Each test ends with a full
check: every room it touched is still healthy and no viewer was left behind.

Hypothesis' ``@given`` cannot wrap a coroutine: each test owns a ``Rig`` (``fuzz_rig``), a
private event loop, and an inner ``@given`` function drives one example on it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from hypothesis import example, given
from hypothesis import strategies as st

from .fuzz_rig import (
    END_STATUSES,
    Rig,
    assert_error_json,
    assert_verdict,
    fuzz,
    head_and_body,
    raw_exchange,
    request_head,
    sse_joined,
)
from .fuzz_strategies import (
    EPOCH,
    Body,
    UpstreamScript,
    cut,
    has_surrogate,
    header_bytes,
    hostile_text,
    last_event_ids,
    origins,
    prompt_bodies,
    resume_queries,
    split_points,
    tap_bodies,
    to_bytes,
    upstream_scripts,
    ws_frames,
)

# --- POST /api/rooms/{room}/prompts ----------------------------------------------------------

ISSUE_BODIES = [
    Body(b'{"content": "hi \\ud800 there"}', "invalid"),
    Body(b'{"content": "hi", "id": "\\ud800"}', "invalid"),
    Body(b'{"content": "hi", "model": "\\udfff"}', "invalid"),
    Body(b'{"content": "hi", "options": {"stop": ["\\ud800"]}}', "invalid"),
    Body(b'{"content": "hi", "options": {"temperature": NaN}}', "invalid"),
    Body(b'{"content": "hi", "options": {"temperature": 1e999}}', "invalid"),
    Body(b'{"content": "fuzz split"}', "valid"),
]


def test_prompt_bodies_in_any_delivery() -> None:
    """Any prompt body, sent whole, in split writes or chunked: no 5xx, the room goes on."""
    with Rig("prompt") as rig:

        @fuzz
        @given(
            body=prompt_bodies(),
            delivery=st.sampled_from(["whole", "split", "chunked"]),
            data=st.data(),
        )
        @example(body=ISSUE_BODIES[0], delivery="whole", data=None)
        @example(body=ISSUE_BODIES[6], delivery="split", data=None)
        @example(body=ISSUE_BODIES[6], delivery="chunked", data=None)
        def one(body: Body, delivery: str, data: st.DataObject | None) -> None:
            room = rig.new_room()
            path = f"/api/rooms/{room}/prompts"
            cuts = data.draw(split_points(len(body.data))) if data else [len(body.data) // 2]

            async def step() -> None:
                if delivery == "whole":
                    async with rig.http().post(
                        rig.base.with_path(path),
                        data=body.data,
                        headers={"Content-Type": "application/json"},
                    ) as resp:
                        assert_verdict(body, resp.status, await resp.text())
                else:
                    headers = {"Content-Type": b"application/json", "Connection": b"close"}
                    if delivery == "split":
                        headers["Content-Length"] = str(len(body.data)).encode()
                        writes = cut(body.data, cuts)
                    else:  # one chunk per write, then the last chunk
                        headers["Transfer-Encoding"] = b"chunked"
                        writes = [b"%x\r\n%s\r\n" % (len(p), p) for p in cut(body.data, cuts)]
                        writes.append(b"0\r\n\r\n")
                    head = request_head("POST", path, rig.port, headers)
                    pieces = [head, *writes]
                    status, raw = await raw_exchange(rig.port, pieces, pause=0.01)
                    assert_verdict(body, status, head_and_body(raw)[1].decode("latin-1"))
                await rig.healthy(room)

            rig.example(step)

        for known in ISSUE_BODIES[1:6]:
            room = rig.new_room()

            async def step(known: Body = known, room: str = room) -> None:
                async with rig.http().post(
                    rig.base / "api/rooms" / room / "prompts", data=known.data
                ) as resp:
                    assert_verdict(known, resp.status, await resp.text())
                await rig.healthy(room)

            rig.example(step)
        one()
        rig.final_check()


# --- POST /api/rooms/{room}/turns/{turn}/cancel ---------------------------------------------

TURN = "{TURN}"
turn_segments = st.one_of(
    st.just(TURN),
    st.just(TURN + "x"),
    hostile_text.map(lambda t: urllib.parse.quote(to_bytes(t), safe="")),
    st.sampled_from(["%FF", "%ED%A0%80", "..", "%2F", "t1", "9" * 5000, "%00"]),
)


def test_cancel_any_turn() -> None:
    """Cancelling any turn id (a live one, an ended one, garbage): no 5xx, the room goes on."""
    with Rig("cancel") as rig:

        @fuzz
        @given(
            turn=turn_segments,
            body=st.one_of(st.just(b""), prompt_bodies().map(lambda b: b.data)),
            settle=st.booleans(),
        )
        def one(turn: str, body: bytes, settle: bool) -> None:
            room = rig.new_room()

            async def step() -> None:
                real = ""
                if TURN in turn:
                    async with rig.http().post(
                        rig.base / "api/rooms" / room / "prompts", json={"content": "fuzz cancel"}
                    ) as resp:
                        assert resp.status == 202, await resp.text()
                        real = (await resp.json())["turn"]
                    if settle:
                        await asyncio.sleep(0.05)
                path = f"/api/rooms/{room}/turns/{turn.replace(TURN, real)}/cancel"
                async with rig.http().post(rig.url(path), data=body) as resp:
                    text = await resp.text()
                    assert resp.status < 500, f"{resp.status}: {text[:300]}"
                    if turn == TURN:
                        assert resp.status in (202, 409), f"{resp.status}: {text[:300]}"
                    else:
                        assert resp.status in (400, 404), f"{resp.status}: {text[:300]}"
                    if resp.status >= 400:
                        assert_error_json(resp.status, text)
                await rig.healthy(room)

            rig.example(step)

        one()
        rig.final_check()


# --- POST /v1/chat/completions (the tap) ------------------------------------------------------


def test_tap_requests() -> None:
    """Any tap request: no 5xx, an honest answer (never an empty 200), the room goes on."""
    with Rig("tap") as rig:

        @fuzz
        @given(drawn=tap_bodies())
        @example(
            drawn=(
                Body(
                    b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}',
                    "invalid",
                ),
                False,
            )
        )
        @example(
            drawn=(
                Body(
                    b'{"messages": [{"role": "system", "content": "\\ud800"},'
                    b' {"role": "user", "content": "hi"}], "stream": true}',
                    "invalid",
                ),
                True,
            )
        )
        @example(
            drawn=(
                Body(
                    b'{"temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}',
                    "invalid",
                ),
                False,
            )
        )
        def one(drawn: tuple[Body, bool]) -> None:
            body, stream = drawn
            room = rig.new_room()

            async def step() -> None:
                async with rig.http().post(
                    rig.base / "v1/chat/completions",
                    data=body.data,
                    headers={"X-Room": room, "Content-Type": "application/json"},
                ) as resp:
                    raw = await resp.read()
                    text = raw.decode("utf-8", "replace")
                    assert resp.status < 500, f"{resp.status}: {text[:300]}"
                    if body.verdict == "invalid":
                        assert resp.status in (400, 413), f"{resp.status}: {text[:300]}"
                    if resp.status >= 400:
                        assert_error_json(resp.status, text)
                    elif stream:
                        lines = [ln for ln in text.splitlines() if ln.startswith("data:")]
                        assert lines, f"an empty streaming 200: {text[:300]!r}"
                        assert lines[-1] == "data: [DONE]" or '"error"' in lines[-1], lines[-3:]
                    else:
                        answer = json.loads(text)
                        assert answer.get("choices"), f"a 200 without choices: {text[:300]}"
                await rig.healthy(room)

            rig.example(step)

        one()
        rig.final_check()


# --- query strings on /ws and /events --------------------------------------------------------


def test_resume_query_strings() -> None:
    """Any resume query on the WebSocket and SSE: a 4xx or a proper join, never a 5xx."""
    with Rig("query") as rig:
        pool = [rig.new_room() for _ in range(4)]
        for room in pool:  # each gets a history, so epoch/since can point into it
            rig.example(functools.partial(rig.healthy, room))

        @fuzz
        @given(query=resume_queries(), endpoint=st.sampled_from(["ws", "events"]), pick=st.data())
        @example(query="since=%C2%B2", endpoint="ws", pick=None)
        @example(query="epoch={EPOCH}&since=%C2%B2", endpoint="ws", pick=None)
        @example(query="last_event_id={EPOCH}%3A" + "9" * 5000, endpoint="events", pick=None)
        @example(query="since=" + "9" * 5000, endpoint="events", pick=None)
        def one(query: str, endpoint: str, pick: st.DataObject | None) -> None:
            room = pick.draw(st.sampled_from(pool)) if pick else pool[0]

            async def step() -> None:
                q = query.replace(EPOCH, await rig.epoch(room)) if EPOCH in query else query
                url = rig.url(f"/api/rooms/{room}/{endpoint}?{q}")
                if endpoint == "ws":
                    try:
                        ws = await rig.http().ws_connect(url)
                    except aiohttp.WSServerHandshakeError as exc:
                        refused: int | None = exc.status
                    else:
                        refused = None
                        async with ws:
                            welcome = await ws.receive_json()
                            assert welcome["type"] == "welcome", welcome
                            if not welcome["recovered"]:
                                assert (await ws.receive_json())["type"] == "snapshot"
                    assert refused is None or 400 <= refused < 500, f"ws refused with {refused}"
                else:
                    async with rig.http().get(url) as resp:
                        assert resp.status < 500, f"{resp.status}: {await resp.text()}"
                        if resp.status == 200:
                            seen = b""
                            async with asyncio.timeout(3):
                                while not sse_joined(b"\r\n\r\n" + seen):
                                    more = await resp.content.readany()
                                    assert more, f"SSE 200 ended before a join: {seen[:300]!r}"
                                    seen += more
                        else:
                            assert_error_json(resp.status, await resp.text())
                await rig.healthy(room)

            rig.example(step)

        one()
        rig.final_check()


# --- headers: Last-Event-ID, X-Room, Origin --------------------------------------------------

WS_UPGRADE = {
    "Upgrade": b"websocket",
    "Connection": b"Upgrade",
    "Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": b"13",
}


@st.composite
def header_cases(draw: st.DrawFn) -> tuple[str, dict[str, bytes]]:
    """A target and the hostile headers sent to it."""
    target = draw(st.sampled_from(["events", "ws", "prompts", "tap"]))
    headers: dict[str, bytes] = {}
    origin = draw(origins)
    if origin is not None:
        headers["Origin"] = origin
    if target == "events" and draw(st.booleans()):
        headers["Last-Event-ID"] = draw(last_event_ids())
    if target == "tap":
        headers["X-Room"] = draw(st.one_of(st.just(b"{ROOM}"), header_bytes))
    return target, headers


def test_hostile_headers() -> None:
    """Any Last-Event-ID, X-Room or Origin bytes: a 4xx or a proper answer, never a 5xx."""
    with Rig("headers") as rig:

        @fuzz
        @given(case=header_cases())
        @example(case=("events", {"Last-Event-ID": b"{EPOCH}:" + "²".encode()}))
        @example(case=("events", {"Last-Event-ID": b"{EPOCH}:" + b"9" * 5000}))
        @example(case=("tap", {"X-Room": b"\xed\xa0\x80"}))
        def one(case: tuple[str, dict[str, bytes]]) -> None:
            target, drawn = case
            room = rig.new_room()

            async def step() -> None:
                epoch = (await rig.epoch(room)).encode()
                own = f"http://127.0.0.1:{rig.port}".encode()
                headers = {
                    name: value.replace(b"{EPOCH}", epoch)
                    .replace(b"{ROOM}", room.encode())
                    .replace(b"{SELF}", own)
                    for name, value in drawn.items()
                }
                enough: Callable[[bytes], bool] | None = None
                body = b""
                if target == "events":
                    path, method = f"/api/rooms/{room}/events", "GET"
                    headers["Accept"] = b"text/event-stream"
                    headers["Connection"] = b"close"
                    enough = sse_joined
                elif target == "ws":
                    path, method = f"/api/rooms/{room}/ws", "GET"
                    headers.update(WS_UPGRADE)
                    enough = lambda data: b"\r\n\r\n" in data  # noqa: E731
                elif target == "prompts":
                    path, method = f"/api/rooms/{room}/prompts", "POST"
                    body = b'{"content": "fuzz header"}'
                else:
                    path, method = "/v1/chat/completions", "POST"
                    body = b'{"messages": [{"role": "user", "content": "fuzz tap"}]}'
                if method == "POST":
                    headers["Content-Type"] = b"application/json"
                    headers["Content-Length"] = str(len(body)).encode()
                    headers["Connection"] = b"close"
                head = request_head(method, path, rig.port, headers)
                status, raw = await raw_exchange(rig.port, [head + body], 0.0, enough)
                assert status < 500, raw[:400]
                if target == "ws":
                    assert status == 101 or 400 <= status < 500, raw[:400]
                if target == "events" and status == 200:
                    assert sse_joined(raw), f"SSE 200 without a join: {raw[:400]!r}"
                await rig.healthy(room)

            rig.example(step)

        one()
        rig.final_check()


# --- WebSocket frames ------------------------------------------------------------------------


def test_websocket_frames() -> None:
    """Any frames: text gets an answer on a live connection, binary 1003, bad UTF-8 1007."""
    with Rig("frames") as rig:

        @fuzz
        @given(frames=st.lists(ws_frames(), min_size=1, max_size=3))
        @example(frames=[("text", b'{"type": "nope", "id": "\\ud800"}')])
        @example(frames=[("text", b'{"type": "prompt", "content": "a\\ud800"}')])
        @example(frames=[("binary", b"\x00")])
        @example(frames=[("raw-text", b'{"type": "prompt", "content": "\xff"}')])
        def one(frames: list[tuple[str, bytes]]) -> None:
            room = rig.new_room()

            async def step() -> None:
                ws = await rig.http().ws_connect(rig.base / "api/rooms" / room / "ws")
                async with ws:
                    assert (await ws.receive_json())["type"] == "welcome"
                    assert (await ws.receive_json())["type"] == "snapshot"
                    expect_close = None
                    for kind, data in frames:
                        if kind == "binary":
                            await ws.send_bytes(data)
                            expect_close = 1003
                            break
                        if kind == "raw-text":
                            await ws.send_frame(data, aiohttp.WSMsgType.TEXT)
                            expect_close = 1007
                            break
                        await ws.send_str(data.decode())
                    if expect_close is None:
                        await ws.send_json({"type": "cancel", "turn": "no-such", "id": "sync"})
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        frame = json.loads(msg.data)
                        if frame.get("type") == "error" and frame.get("ref") == "sync":
                            break
                    if expect_close is None:
                        assert not ws.closed, f"connection closed with {ws.close_code}"
                    else:
                        assert ws.close_code == expect_close, (ws.close_code, expect_close)
                await rig.healthy(room)

            rig.example(step)

        one()
        rig.final_check()


# --- a scripted upstream ---------------------------------------------------------------------


def _strict_json(text: str) -> Any:
    def refuse(token: str) -> Any:
        raise AssertionError(f"the server sent the non-JSON number {token}")

    return json.loads(text, parse_constant=refuse)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


async def _frames_until_turn_end(frames: AsyncIterator[str]) -> dict[str, Any]:
    """Read a viewer's frames until the first turn it saw start ends; check every frame."""
    turn = None
    async for text in frames:
        frame = _strict_json(text)
        assert isinstance(frame, dict), frame
        bad = [s for s in _strings(frame) if has_surrogate(s)]
        assert not bad, f"a lone surrogate reached a viewer: {frame}"
        if frame.get("type") == "turn.start" and turn is None:
            turn = frame["turn"]
        if frame.get("type") == "turn.end" and frame.get("turn") == turn:
            assert frame["status"] in END_STATUSES - {"cancelled"}, frame
            if frame["status"] == "failed":
                assert isinstance(frame["error"]["code"], str), frame
                assert isinstance(frame["error"]["message"], str), frame
            return frame
    raise AssertionError("the viewer's stream ended before turn.end")


async def _ws_texts(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[str]:
    while True:
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, ws.close_code)
        yield msg.data


async def _sse_texts(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    buffer = b""
    while more := await resp.content.readany():
        buffer += more
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            data = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
            if data:
                yield b"\n".join(data).decode()


async def _join_both(rig: Rig, room: str) -> tuple[Any, Any, AsyncIterator[str]]:
    """A WebSocket and an SSE viewer of ``room``, both past their snapshot."""
    ws = await rig.http().ws_connect(rig.base / "api/rooms" / room / "ws")
    assert (await ws.receive_json())["type"] == "welcome"
    assert (await ws.receive_json())["type"] == "snapshot"
    sse = await rig.http().get(rig.base / "api/rooms" / room / "events")
    assert sse.status == 200, await sse.text()
    sse_texts = _sse_texts(sse)
    async for text in sse_texts:
        if _strict_json(text)["type"] == "snapshot":
            break
    return ws, sse, sse_texts


UPSTREAM_EXAMPLES = [
    UpstreamScript(
        200,
        "text/event-stream",
        (
            b'data: {"choices": [{"index": 0, "delta": {"content": "a\\ud800"}}]}\n\n',
            b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],'
            b' "usage": {"prompt_tokens": 1e999}}\n\ndata: [DONE]\n\n',
        ),
        0.0,
    ),
    UpstreamScript(400, "application/json", (b'{"error": {"message": "bad \\ud800"}}',), 0.0),
    UpstreamScript(
        200,
        "text/event-stream",
        (b'data: {"choices": [{"index": 0, "delta": {"content": "half"}}]}\n\n',),
        0.0,
    ),
    UpstreamScript(  # an in-stream error, then more text: the turn ends at the error
        200,
        "text/event-stream",
        (
            b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
            b'data: {"error":{"message":"boom","code":"x"}}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n',
        ),
        0.0,
    ),
]


def test_scripted_upstream() -> None:
    """Whatever the upstream streams: the turn ends for every viewer, the room goes on."""
    with Rig("upstream") as rig:

        @fuzz
        @given(script=upstream_scripts())
        @example(script=UPSTREAM_EXAMPLES[0])
        @example(script=UPSTREAM_EXAMPLES[1])
        def one(script: UpstreamScript) -> None:
            room = rig.new_room()
            content = f"fuzz upstream {room}"
            rig.upstream.scripts[content] = script

            async def step() -> None:
                ws, sse, sse_texts = await _join_both(rig, room)
                async with ws, sse:
                    async with rig.http().post(
                        rig.base / "api/rooms" / room / "prompts", json={"content": content}
                    ) as resp:
                        assert resp.status == 202, await resp.text()
                    by_ws = await _frames_until_turn_end(_ws_texts(ws))
                    by_sse = await _frames_until_turn_end(sse_texts)
                    assert by_ws == by_sse
                await rig.healthy(room)

            try:
                rig.example(step)
            finally:
                rig.upstream.scripts.pop(content, None)

        one()
        rig.final_check()
