"""The fuzz suite's rig: one fanout server, a fast fuzz upstream and a client on a private loop.

Hypothesis' ``@given`` cannot wrap a coroutine, so each fuzz test owns a ``Rig`` (its own event
loop) and an inner ``@given`` function drives one example on it with ``run_until_complete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, Phase, settings
from yarl import URL

from server.app import create_app
from server.config import Secret, load_config

from .conftest import API_KEY
from .fuzz_health import assert_room_healthy
from .fuzz_strategies import Body, UpstreamScript

# derandomize: a CI run draws the same examples every time, so a red build reproduces locally;
# database=None: nothing is written next to the checkout.
fuzz = settings(
    max_examples=int(os.environ.get("FANOUT_FUZZ_EXAMPLES", "50")),  # more for a long hunt
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
STEP_SECONDS = 10.0  # one example, its health check included
END_STATUSES = {"completed", "cancelled", "failed", "truncated"}


class Records(logging.Handler):
    """Keeps every ERROR record and every record that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def take(self) -> list[str]:
        """The kept records as text (with their tracebacks), and forget them."""
        formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
        out = [formatter.format(r) for r in self.records]
        self.records.clear()
        return out


def _fast_answer() -> web.Response:
    return web.json_response(
        {
            "id": "chatcmpl-fuzz",
            "object": "chat.completion",
            "created": 0,
            "model": "fuzz-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


FAST_STREAM = b"".join(
    [
        _sse(
            {
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        ),
        _sse(
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}],
            }
        ),
        _sse(
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        ),
        _sse(
            {
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ),
        b"data: [DONE]\n\n",
    ]
)


class FuzzUpstream:
    """A chat-completions upstream on port 0: a fast plain answer, or a script for a prompt."""

    def __init__(self) -> None:
        self.scripts: dict[str, UpstreamScript] = {}
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen on 127.0.0.1 port 0."""
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fuzz-model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        script = self.scripts.get(_last_user_text(body))
        stream = body.get("stream") is True
        if script is None and not stream:
            return _fast_answer()
        if script is not None and script.status != 200:
            return web.Response(
                status=script.status, body=script.pieces[0], content_type=script.content_type
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError):
            for piece in script.pieces if script is not None else (FAST_STREAM,):
                await resp.write(piece)
                await asyncio.sleep(script.pause if script is not None else 0)
            await resp.write_eof()
        return resp


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


class Rig:
    """One fanout server, the fuzz upstream and a client session, on a private event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.upstream = FuzzUpstream()
        self.server: TestServer | None = None
        self.session: aiohttp.ClientSession | None = None
        self.records = Records()
        self.rooms: list[str] = []
        self._count = itertools.count()
        self._level = logging.NOTSET

    def __enter__(self) -> Rig:
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.INFO)
        root.addHandler(self.records)
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop())
            # Background tasks the server left sleeping (a turn's lease keeper wakes up to
            # notice its turn ended): cancel them here, or they die noisily at interpreter exit.
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            root = logging.getLogger()
            root.removeHandler(self.records)
            root.setLevel(self._level)

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = STEP_SECONDS) -> Any:
        """Run ``coro`` on the rig's loop, bounded by ``timeout`` seconds."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def _start(self) -> None:
        await self.upstream.start()
        settings = {
            "upstream.base_url": self.upstream.base_url,
            "upstream.max_retries": 0,
            "upstream.idle_timeout": 2.0,
            "limits.prompts_per_minute": 0,
            "limits.rooms_per_minute": 0,
        }
        config = load_config(None, {}, settings)
        config = dataclasses.replace(config, api_key=Secret(API_KEY))
        self.server = TestServer(create_app(config), host="127.0.0.1", port=0)
        await self.server.start_server()
        self.session = aiohttp.ClientSession()

    async def _stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.server is not None:
            await self.server.close()
        await self.upstream.close()

    @property
    def base(self) -> URL:
        """The server's root URL."""
        assert self.server is not None
        return URL(str(self.server.make_url("/")))

    @property
    def port(self) -> int:
        """The server's port."""
        port = self.base.port
        assert port is not None
        return port

    def http(self) -> aiohttp.ClientSession:
        """The client session."""
        assert self.session is not None
        return self.session

    def new_room(self) -> str:
        """A fresh room name for one example."""
        room = f"fz-{self.name}-{next(self._count)}"
        self.rooms.append(room)
        return room

    def url(self, path_and_query: str) -> URL:
        """An already-encoded path (and query) on the server, sent byte for byte."""
        return URL(str(self.base.with_path("")) + path_and_query, encoded=True)

    async def epoch(self, room: str) -> str:
        """The room's epoch, as ``GET /api/rooms/{room}`` reports it."""
        async with self.http().get(self.base / "api/rooms" / room) as resp:
            assert resp.status == 200, await resp.text()
            epoch: str = (await resp.json())["epoch"]
            return epoch

    async def healthy(self, room: str) -> None:
        """The room invariant, then the log invariant."""
        await assert_room_healthy(self.http(), self.base, room, f"{room}-{next(self._count)}")
        self.assert_quiet_log()

    def assert_quiet_log(self) -> None:
        """No ERROR record and no traceback since the last check."""
        found = self.records.take()
        assert not found, "\n".join(found)

    def example(self, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one example: its step, then the log check (the step checks its room)."""
        self.records.take()
        try:
            self.run(step())
        finally:
            self.assert_quiet_log()

    def final_check(self) -> None:
        """Every room touched is still healthy, nothing streams and no viewer is left behind."""

        async def check() -> None:
            async with self.http().get(self.base / "healthz") as resp:
                assert resp.status == 200
            for room in self.rooms:
                await assert_room_healthy(self.http(), self.base, room, f"final-{room}")
            deadline = asyncio.get_running_loop().time() + 3.0
            while True:
                async with self.http().get(self.base / "api/rooms") as resp:
                    assert resp.status == 200
                    listed = {r["name"]: r for r in (await resp.json())["rooms"]}
                busy = {
                    name: (r["viewers"], r["streaming"])
                    for name, r in listed.items()
                    if r["viewers"] or r["streaming"]
                }
                if not busy or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert not busy, f"rooms still counting viewers or streaming: {busy}"

        self.run(check(), timeout=max(STEP_SECONDS, 0.5 * len(self.rooms)))
        self.assert_quiet_log()


def assert_error_json(status: int, text: str) -> None:
    """A 4xx body is the contract's error object."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise AssertionError(f"{status} with a body that is not JSON: {text[:200]!r}") from exc
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), str), body
    assert isinstance(body["error"].get("message"), str), body


def assert_verdict(body: Body, status: int, text: str) -> None:
    """No 5xx; what the contract accepts is accepted, what it refuses is refused."""
    assert status < 500, f"{status}: {text[:300]}"
    if body.verdict == "valid":
        assert status == 202, f"a valid prompt got {status}: {text[:300]}"
    elif body.verdict == "invalid":
        assert status in (400, 413), f"an invalid body got {status}: {text[:300]}"
    if status >= 400:
        assert_error_json(status, text)


async def raw_exchange(
    port: int,
    pieces: list[bytes],
    pause: float,
    enough: Callable[[bytes], bool] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """Write ``pieces`` one TCP write each, ``pause`` apart; read the answer (to EOF or enough).

    Returns:
        The status code and the bytes read (head and body).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    try:
        async with asyncio.timeout(timeout):
            for i, piece in enumerate(pieces):
                if i and pause:
                    await asyncio.sleep(pause)
                writer.write(piece)
                await writer.drain()
            while not (enough and enough(data)):
                more = await reader.read(65_536)
                if not more:
                    break
                data += more
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    assert match, f"no HTTP answer: {data[:200]!r}"
    return int(match.group(1)), data


def head_and_body(data: bytes) -> tuple[bytes, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def request_head(method: str, path: str, port: int, headers: dict[str, bytes]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: 127.0.0.1:{port}".encode()]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def sse_joined(data: bytes) -> bool:
    _, body = head_and_body(data)
    return b"event: snapshot" in body or re.search(rb'"recovered":\s*true', body) is not None
