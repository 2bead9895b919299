"""Reproductions of hostile sizes and tap faults, each on real servers.

Each test replays one reproduction of the issue on real servers on 127.0.0.1 (the fake upstream
as the model), asserts the specific outcome, and then checks that the room it touched still
welcomes a new viewer and completes a new prompt:

- one 100 MB upstream ``data:`` line without a newline (default ``max_line_bytes``): the turn
  ends ``failed`` / ``bad_chunk`` within seconds, the server stops reading at the limit and
  ``/healthz`` answers meanwhile; with the limit off, a 64 MB line is decoded whole;
- one huge answer: what the room keeps besides its newest turn stays within
  ``rooms.max_room_bytes`` (the resume log gives way), while it streams and after;
- a 1 MB answer, then ten prompts: each completes and sends at most ``rooms.history_bytes`` of
  history upstream;
- the tap never answers a failed turn with a 200: a NaN temperature or a lone surrogate in a
  system message on a *streaming* request is 400 before anything starts, and a turn that fails
  internally is 500 ``internal_error``, streaming or not.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.core.messages import Delta, SequencedEvent
from server.core.room import RoomState
from server.core.types import RoomName
from server.http.keys import HUB

from .conftest import ServerFactory, viewer
from .fake_upstream import FakeUpstream, Script, chunk, text_stream
from .room_health import assert_room_healthy
from .test_hostile_clients import no_tracebacks, room_is_healthy
from .test_hostile_upstream import ours, role

TIMEOUT = 20.0
MIB = 1024 * 1024


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record from INFO up."""
    caplog.set_level(logging.INFO)
    return caplog


def server_problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Records of the servers under test that are ERROR or carry a traceback.

    (not the fake upstream's) that are ERROR or carry a traceback.
    """
    return [r.getMessage() for r in ours(caplog) if r.exc_info or r.levelno >= logging.ERROR]


# --- one long upstream line --------------------------------------------------------------------


async def watch_healthz(
    session: aiohttp.ClientSession, server: TestServer, stop: asyncio.Event, took: list[float]
) -> None:
    """GET /healthz every 20 ms until ``stop`` (at most 2,000 times); each answer's seconds."""
    loop = asyncio.get_running_loop()
    url = server.make_url("/healthz")
    for _ in range(2000):
        if stop.is_set():
            return
        began = loop.time()
        async with session.get(url) as resp:
            assert resp.status == 200
            await resp.read()
        took.append(loop.time() - began)
        await asyncio.sleep(0.02)


def long_line(prefix: str, mib: int, suffix: str = "") -> list[Any]:
    """``prefix``, ``mib`` MiB of spaces and ``suffix``, with no line break at all.

    One line of the upstream's stream, written 16 KiB at a time (so the server reads it in many
    small pieces, as from a real network; the pieces are one shared string, never joined here).
    """
    piece = " " * (16 * 1024)
    pieces = [piece] * (mib * MIB // len(piece))
    return [prefix, *pieces, suffix] if suffix else [prefix, *pieces]


async def prompt_and_watch_healthz(
    session: aiohttp.ClientSession, server: TestServer, room: str
) -> dict[str, Any]:
    """Prompt ``room`` and return its turn.end frame, polling /healthz meanwhile.

    Prompt ``room`` and wait for the turn's end while polling /healthz (which must answer while the
    line streams); the turn.end frame. How fast is bench/long_line.py's question: the tests assert
    no timings.
    """
    took: list[float] = []
    stop = asyncio.Event()
    async with asyncio.timeout(TIMEOUT):
        v = await viewer(session, server, room)
        poller = asyncio.create_task(watch_healthz(session, server, stop, took))
        try:
            await v.send({"type": "prompt", "content": "Go", "id": f"{room}-long-line"})
            turn = await v.wait_turn_end(timeout=TIMEOUT)
        finally:
            stop.set()
            await poller
        assert v.problems == []
        await v.close()
    assert turn.end is not None
    assert took, "/healthz was never answered while the line streamed"
    return turn.end


async def test_a_100_mb_line_without_a_newline_fails_bad_chunk_and_healthz_answers(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """Issue: one 100 MB ``data:`` line without a newline took 227 s and held /healthz at 3.5 s.

    With the default line limit (8 MiB) the turn ends ``failed`` / ``bad_chunk`` after the text
    before it, the server stops reading long before the 100 MB are written, and /healthz answers all
    along.
    """
    upstream.always(
        Script(
            chunks=[role(), chunk("Hello"), *long_line("data: ", 100)],
            gap=0.0,
            split=False,
        )
    )
    end = await prompt_and_watch_healthz(session, server, "longline")
    assert end["status"] == "failed"
    assert end["error"]["code"] == "bad_chunk"
    assert "longer than the limit" in end["error"]["message"]
    # The server stopped reading at the limit: the fake never finished writing its 100 MB
    # (closing the connection itself is test_hostile_upstream's
    # test_a_line_past_the_limit_closes_the_upstream_connection).
    assert upstream.completed == 0
    snap = await (await session.get(server.make_url("/api/rooms/longline"))).json()
    assert snap["turns"][-1]["choices"][0]["content"] == "Hello"
    await assert_room_healthy(session, server, "longline", upstream, timeout=TIMEOUT)
    assert server_problems(logs) == []


async def test_an_unlimited_64_mb_line_is_decoded_whole(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """With ``max_line_bytes = 0`` a 64 MB line is kept whole and decoded once.

    With ``max_line_bytes = 0`` a 64 MB line (a chunk padded with spaces, then the body ends without
    any line break), read 16 KiB at a time, is kept whole and decoded once: the turn completes with
    its text and /healthz answers meanwhile. (The quadratic decoder, which copied and searched the
    whole unfinished line on every read, took about 20 s here, past the test's timeout;
    bench/long_line.py measures the decoder's time per size.)
    """
    server = await make_server(upstream__max_line_bytes=0)
    tail = json.dumps(chunk("Hello", finish="stop"))[1:]  # the object without its opening brace
    upstream.always(Script(chunks=[role(), *long_line("data: {", 64, tail)], gap=0.0, split=False))
    end = await prompt_and_watch_healthz(session, server, "unlimited")
    assert end["status"] == "completed", end
    assert [c["finish_reason"] for c in end["choices"]] == ["stop"]
    assert upstream.completed == 1
    snap = await (await session.get(server.make_url("/api/rooms/unlimited"))).json()
    assert snap["turns"][-1]["choices"][0]["content"] == "Hello"
    await assert_room_healthy(session, server, "unlimited", upstream, timeout=TIMEOUT)
    assert server_problems(logs) == []


# --- a huge answer: the room keeps bytes, not counts ------------------------------------------

PIECE = 100_000  # characters per upstream chunk
BUDGET = 1_000_000  # rooms.max_room_bytes for the test (scaled down from 16 MiB by 16)
PIECES = 30  # a 3 MB answer: three times the budget, under the client's 4 MiB frame limit


def delta_text(event: SequencedEvent) -> int:
    """Characters of answer text a retained event holds."""
    if not isinstance(event, Delta):
        return 0
    return sum(len(c.content or "") for c in event.choices)


def retained_log_text(server: TestServer, room: str) -> tuple[int, int]:
    """Answer text held for resumes: in the room's log and in the broker's records."""
    hub = server.app[HUB]
    state = hub.rooms[RoomName(room)].state
    in_log = sum(delta_text(e) for e in state._log)
    stored = hub.broker.store.rooms[RoomName(room)]  # type: ignore[attr-defined]
    in_broker = sum(len(r.data) for r in stored.records)
    return in_log, in_broker


async def test_a_huge_answer_keeps_the_room_within_its_byte_budget(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """Issue: one 20 MB answer cost 282 MB of RSS, the room bounded by counts only.

    Scaled down (a 3 MB answer, max_room_bytes of 1 MB): while it streams and after, the resume log
    (room and broker) holds at most the budget; the newest turn stays whole; a resume from before it
    gets a snapshot instead of the forgotten events; the room goes on.
    """
    server = await make_server(rooms__max_room_bytes=BUDGET)
    room = "huge"
    watcher = await viewer(session, server, room)
    epoch = watcher.epoch
    upstream.always(Script(chunks=text_stream(["y" * PIECE] * PIECES), gap=0.002, split=False))
    most = (0, 0)
    async with asyncio.timeout(TIMEOUT):
        await watcher.send({"type": "prompt", "content": "a long one please", "id": "huge-1"})
        for _ in range(20_000):  # sample what the room keeps while the answer streams
            if any(t.end is not None for t in watcher.turns.values()):
                break
            if RoomName(room) in server.app[HUB].rooms:
                now = retained_log_text(server, room)
                most = (max(most[0], now[0]), max(most[1], now[1]))
            await asyncio.sleep(0.002)
        turn = await watcher.wait_turn_end()
    assert turn.status == "completed"
    assert len(turn.text()) == PIECE * PIECES
    assert 0 < most[0] <= BUDGET, f"the room's log held {most[0]} characters"
    assert most[1] <= BUDGET + PIECE, f"the broker's records held {most[1]} bytes"
    in_log, in_broker = retained_log_text(server, room)
    assert in_log <= BUDGET, in_log
    assert in_broker <= BUDGET, in_broker
    # The newest turn stays whole; the events that built it are forgotten: no resume from 0.
    async with session.get(server.make_url(f"/api/rooms/{room}")) as resp:
        snapshot = await resp.json()
    assert snapshot["turns"][-1]["choices"][0]["content"] == "y" * (PIECE * PIECES)
    late = await viewer(session, server, room, f"?epoch={epoch}&since=0")
    assert late.frames[0]["type"] == "welcome"
    assert late.frames[0]["recovered"] is False
    assert late.turns[snapshot["turns"][-1]["id"]].text() == "y" * (PIECE * PIECES)
    await late.close()
    await watcher.close()
    await assert_room_healthy(session, server, room, upstream, timeout=TIMEOUT)
    assert server_problems(logs) == []


# --- the history sent upstream ----------------------------------------------------------------


async def test_after_a_1_mb_answer_the_next_ten_prompts_work(
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """Issue: after one 1 MB answer the next 10 prompts all failed.

    Issue: after one 1 MB answer the next 10 prompts all failed (the history sent upstream had no
    bound). With the default history_bytes (256 KiB) each of the ten goes upstream without the 1 MB
    answer, within the budget, and completes; a new viewer then joins and prompts.
    """
    room = "history"
    answers: Iterator[list[str]] = iter([["z" * PIECE] * 10, *[[f"short {i}"] for i in range(10)]])
    upstream.script_for = lambda _body: Script(chunks=text_stream(next(answers)), split=False)
    watcher = await viewer(session, server, room)
    url = server.make_url(f"/api/rooms/{room}/prompts")
    async with asyncio.timeout(TIMEOUT):
        for i in range(11):
            async with session.post(url, json={"content": f"prompt {i}"}) as resp:
                assert resp.status == 202, await resp.text()
                turn_id = (await resp.json())["turn"]
            ended = await watcher.wait_turn_end(turn_id)
            assert ended.status == "completed", ended.end
            assert ended.text() == ("z" * PIECE * 10 if i == 0 else f"short {i - 1}")
    assert len(upstream.requests) == 11
    for request in upstream.requests[1:]:
        said = [m["content"] for m in request["messages"] if m["role"] != "system"]
        assert sum(len(t.encode()) for t in said) <= 256 * 1024  # history and prompt
        assert "z" * PIECE * 10 not in said
    # The newest history is kept: the last request carries the turns just before it.
    last = [m["content"] for m in upstream.requests[-1]["messages"]]
    assert last[-3:] == ["prompt 9", "short 8", "prompt 10"]
    assert watcher.problems == []
    await watcher.close()
    await assert_room_healthy(session, server, room, upstream, timeout=TIMEOUT)
    no_tracebacks(logs)


# --- the tap never reports a failed turn as a success -----------------------------------------

STREAMING_BAD_TAP_BODIES = {
    "NaN temperature": (
        '{"model": "m", "stream": true, "temperature": NaN,'
        ' "messages": [{"role": "user", "content": "x"}]}',
        "'temperature' is not a finite number",
    ),
    "surrogate in a system message": (
        '{"model": "m", "stream": true, "messages": [{"role": "system", "content": "be \\ud800"},'
        ' {"role": "user", "content": "x"}]}',
        "'messages[0].content' is not valid Unicode text",
    ),
}


@pytest.mark.parametrize(
    ("body", "message"), STREAMING_BAD_TAP_BODIES.values(), ids=STREAMING_BAD_TAP_BODIES.keys()
)
async def test_bad_text_in_a_streaming_tap_body_is_400_not_an_empty_200(
    body: str,
    message: str,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    logs: pytest.LogCaptureFixture,
) -> None:
    """Issue: these were a streaming 200 with an empty body.

    Now 400 bad_request JSON naming the field, before any upstream request; the room goes on.
    """
    async with asyncio.timeout(TIMEOUT):
        resp = await session.post(
            server.make_url("/v1/chat/completions"),
            data=body.encode(),
            headers={"X-Room": "badstream", "Content-Type": "application/json"},
        )
        assert (resp.status, resp.content_type) == (400, "application/json")
        error = (await resp.json())["error"]
    assert error["code"] == "bad_request"
    assert message in error["message"]
    assert upstream.requests == []
    await room_is_healthy(session, server, "badstream", upstream)
    no_tracebacks(logs)


class Boom(RuntimeError):
    """The injected fault."""


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_tap_turn_that_fails_internally_is_500_not_a_200(
    stream: bool,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue: an internal failure was a 200 with ``choices: []`` or an empty streaming 200.

    A fault while the turn streams ends it ``failed`` / ``internal_error``; the tap's caller gets
    500 with that error JSON, streaming or not; the room goes on.
    """
    original = RoomState.feed_many
    raised = 0

    def feed_once(self: RoomState, *args: Any, **kwargs: Any) -> list[SequencedEvent]:
        nonlocal raised
        if raised == 0:
            raised += 1
            raise Boom("feed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RoomState, "feed_many", feed_once)
    watcher = await viewer(session, server, "tapboom")
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    async with asyncio.timeout(TIMEOUT):
        resp = await session.post(
            server.make_url("/v1/chat/completions"), json=body, headers={"X-Room": "tapboom"}
        )
        raw = await resp.read()
    assert (resp.status, resp.content_type) == (500, "application/json"), raw
    assert json.loads(raw)["error"]["code"] == "internal_error"
    assert raised == 1
    turn = await watcher.wait_turn_end()
    assert turn.status == "failed"
    assert turn.end is not None
    assert turn.end["error"]["code"] == "internal_error"
    await watcher.close()
    await room_is_healthy(session, server, "tapboom", upstream)
