"""Fuzzing the WebSocket with thousands of frames: no handler fails, the room stays whole."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.config import Secret, load_config

from .conftest import API_KEY
from .fake_upstream import FakeUpstream, Script, text_stream

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
option_keys = st.sampled_from(
    [
        "temperature",
        "top_p",
        "max_tokens",
        "n",
        "seed",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "reasoning_effort",
        "bogus",
    ]
)
framed = st.fixed_dictionaries(
    {"type": st.sampled_from(["prompt", "cancel", "nope", ""]) | json_values},
    optional={
        "content": st.text(max_size=40) | json_values,
        "id": st.text(max_size=10) | json_values,
        "model": st.text(max_size=10) | json_values,
        "turn": st.text(max_size=10) | json_values,
        "options": st.dictionaries(option_keys, json_values, max_size=3) | json_values,
    },
)
frames = (
    framed.map(json.dumps)
    | json_values.map(json.dumps)
    | st.text(max_size=60)
    | st.binary(max_size=30).map(lambda b: b.decode("latin-1"))
)


class ErrorRecords(logging.Handler):
    """Keeps every ERROR (or worse) record logged while it is installed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """A fanout server and a fake upstream on their own loop in a thread."""

    def __init__(self) -> None:
        self.errors = ErrorRecords()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.upstream = FakeUpstream()
        self.server: TestServer | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sync = 0

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> None:
        await self.upstream.start()
        self.upstream.always(Script(chunks=text_stream(["a", "b"]), gap=0.0, split=False))
        config = load_config(
            None,
            {},
            {
                "upstream.base_url": self.upstream.base_url,
                "upstream.max_retries": 0,
                "limits.max_bad_frames": 0,
                "limits.prompts_per_minute": 0,
            },
        )
        import dataclasses

        config = dataclasses.replace(config, api_key=Secret(API_KEY))
        self.server = TestServer(create_app(config), host="127.0.0.1", port=0)
        await self.server.start_server()
        self.session = aiohttp.ClientSession()

    async def connect(self) -> None:
        assert self.session is not None
        assert self.server is not None
        self.ws = await self.session.ws_connect(self.server.make_url("/api/rooms/fuzz/ws"))

    async def exchange(self, frame: str) -> str:
        """Send one fuzz frame, then a sync frame; 'ok' once the sync answer came back."""
        if self.ws is None or self.ws.closed:
            await self.connect()
        assert self.ws is not None
        self.sync += 1
        ref = f"sync-{self.sync}"
        await self.ws.send_str(frame)
        await self.ws.send_str(json.dumps({"type": "cancel", "turn": "no-such", "id": ref}))
        async with asyncio.timeout(5):
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if data.get("type") == "error" and data.get("ref") == ref:
                    return "ok"
        return f"closed {self.ws.close_code}"

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.server is not None:
            await self.server.close()
        await self.upstream.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """One server for every example."""
    h = Harness()
    logging.getLogger().addHandler(h.errors)
    h.run(h.start())
    yield h
    logging.getLogger().removeHandler(h.errors)
    h.run(h.stop())
    h.loop.call_soon_threadsafe(h.loop.stop)
    h.thread.join(5)
    h.loop.close()


@settings(
    max_examples=2500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(frame=frames)
def test_any_frame_gets_an_answer_and_the_connection_survives(harness: Harness, frame: str) -> None:
    """Whatever a client sends, the server answers and keeps serving the connection."""
    assert harness.run(harness.exchange(frame)) == "ok"


def test_after_fuzzing_the_room_is_consistent(harness: Harness) -> None:
    """No error was logged; a late joiner's snapshot matches; a valid prompt still completes."""

    async def check() -> None:
        assert harness.session is not None
        assert harness.server is not None
        url = harness.server.make_url("/api/rooms/fuzz/ws")
        async with harness.session.ws_connect(url) as ws:
            welcome = await ws.receive_json()
            snapshot = await ws.receive_json()
            assert snapshot["seq"] == welcome["seq"]
            for turn in snapshot["turns"]:
                assert turn["status"] in (
                    "completed",
                    "streaming",
                    "cancelled",
                    "failed",
                    "truncated",
                )
            while snapshot["turns"] and snapshot["turns"][-1]["status"] == "streaming":
                frame = await ws.receive_json()
                if frame["type"] == "turn.end":
                    break
            await ws.send_json({"type": "prompt", "content": "still alive?", "id": "final-check"})
            async with asyncio.timeout(5):
                while (frame := await ws.receive_json())["type"] != "turn.end":
                    pass
            assert frame["status"] == "completed"

    harness.run(check())
    assert [r.getMessage() for r in harness.errors.records] == []
