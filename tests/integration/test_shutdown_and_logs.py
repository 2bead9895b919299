"""SIGTERM mid-stream on a real server process; logs without secrets; static files only."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.app import create_app
from server.config import load_config
from server.http.logs import AccessLog, JsonLines

from .fake_upstream import FakeUpstream
from .test_cli import _free_port

ROOT = Path(__file__).resolve().parents[2]


def _start(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_sigterm_mid_stream_ends_the_turn_closes_1001_and_exits() -> None:
    """SIGTERM: viewers get turn.end (truncated) then close 1001; the process exits soon, 0."""
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("FANOUT_")
    }
    env.update(
        FANOUT_UPSTREAM_DEMO_TTFT="0",
        FANOUT_UPSTREAM_DEMO_TOKENS_PER_SECOND="20",
        FANOUT_SERVER_LOG_FORMAT="json",
    )
    proc = _start(port, env)
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(30):
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            ws = await session.ws_connect(
                f"ws://127.0.0.1:{port}/api/rooms/bye/ws", autoclose=False
            )
            await ws.send_json({"type": "prompt", "content": "a long answer please"})
            frames: list[dict[str, object]] = []
            while not any(f["type"] == "delta" for f in frames):
                frames.append(await ws.receive_json())
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)
            await ws.close()
        ends = [f for f in frames if f["type"] == "turn.end"]
        assert [e["status"] for e in ends] == ["truncated"]
        code = await asyncio.to_thread(proc.wait, 15)
        assert code == 0
        assert time.monotonic() - sent < 10
        assert proc.stderr is not None
        lines = [line for line in proc.stderr.read().decode().splitlines() if line.startswith("{")]
        assert lines, "json logs expected"
        assert all("level" in json.loads(line) for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


async def test_access_log_never_writes_tokens_or_bodies(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A token in the query string and the prompt's text never reach the logs."""
    caplog.set_level(logging.INFO)
    config = load_config(None, {}, {"upstream.base_url": upstream.base_url})
    runner_server = TestServer(create_app(config), host="127.0.0.1", port=0)
    await runner_server.start_server(access_log_class=AccessLog)
    try:
        async with aiohttp.ClientSession() as session:
            url = runner_server.make_url("/api/rooms/logs/prompts")
            async with session.post(
                url.with_query(token="SECRET-TOKEN-123"), json={"content": "my private words"}
            ) as resp:
                assert resp.status == 202
            async with session.get(runner_server.make_url("/healthz").with_query(token="T-2")):
                pass
            await asyncio.wait_for(upstream.finished.wait(), 5)
    finally:
        await runner_server.close()
    text = caplog.text
    assert "POST /api/rooms/logs/prompts 202" in text
    assert "SECRET-TOKEN-123" not in text
    assert "T-2" not in text
    assert "my private words" not in text


def test_json_log_lines() -> None:
    """The JSON formatter writes one object per record with level, logger and message."""
    record = logging.LogRecord("fanout.x", logging.WARNING, __file__, 1, "hi %s", ("you",), None)
    out = json.loads(JsonLines().format(record))
    assert (out["level"], out["logger"], out["message"]) == ("warning", "fanout.x", "hi you")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server/config.py",
        "/static/%2e%2e/server/config.py",
        "/static/..%2fserver%2fconfig.py",
        "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/static//etc/passwd",
    ],
)
async def test_static_files_refuse_path_traversal(
    server: TestServer, session: aiohttp.ClientSession, path: str
) -> None:
    """Static paths that climb out of web/static are refused and leak no file."""
    async with session.get(f"http://127.0.0.1:{server.port}{path}") as resp:
        body = await resp.text()
    assert resp.status in (403, 404)
    assert "load_config" not in body
    assert "root:" not in body
    async with session.get(server.make_url("/static/lobby.css")) as ok:
        assert ok.status == 200


async def test_a_handshake_that_never_completes_is_cut_off() -> None:
    """A client that sends half a request and goes quiet is disconnected by the idle timeout."""
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("FANOUT_")
    }
    env["FANOUT_SERVER_IDLE_TIMEOUT_SECONDS"] = "0.5"
    proc = _start(port, env)
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            writer.write(b"GET /api/rooms/x/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end
            await writer.drain()
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
            assert time.monotonic() - started < 5
            writer.close()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
