"""The command line: `serve` in demo mode end to end, `watch`, and helpful errors."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.cli import main
from server.tools.watch import watch

from .conftest import viewer
from .fake_upstream import ANSWER

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
async def demo_server() -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m server serve` with no key and no URL, as `make run` starts it."""
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("FANOUT_")
    }
    env["FANOUT_UPSTREAM_DEMO_TTFT"] = "0.05"
    env["FANOUT_UPSTREAM_DEMO_TOKENS_PER_SECOND"] = "400"
    proc = _spawn(["serve", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s, asyncio.timeout(20):
            while True:
                try:
                    async with s.get(url + "/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


async def test_demo_mode_serves_two_viewers_from_the_mock(
    demo_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """With no key and no URL the server says DEMO MODE and two viewers get one answer."""
    url, proc = demo_server
    async with aiohttp.ClientSession() as session:
        ws = url.replace("http", "ws") + "/api/rooms/demo/ws"
        from .viewer import Viewer

        a = await Viewer(session, ws).connect()
        b = await Viewer(session, ws).connect()
        await a.send({"type": "prompt", "content": "Tell me a joke"})
        texts = [(await v.wait_turn_end()).text() for v in (a, b)]
        assert texts[0] == texts[1]
        assert texts[0].startswith("Mock answer 0 to: Tell me a joke")
        assert a.turns[next(iter(a.turns))].end["usage"]["total_tokens"] > 0  # type: ignore[index]
        for v in (a, b):
            await v.close()
        async with session.get(url + "/") as page:
            assert "Demo mode" in await page.text()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "DEMO MODE" in err
    assert proc.returncode == 0


@pytest.mark.usefixtures("upstream")
async def test_watch_prints_the_answer_and_exits_when_its_turn_ends(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """`fanout watch ROOM --prompt` prints the streamed text and the turn's end line."""
    other = await viewer(session, server, "w")
    out, err = io.StringIO(), io.StringIO()
    url = str(server.make_url("/"))
    code = await asyncio.wait_for(watch(url, "w", prompt="hello", out=out, err=err), 10)
    assert code == 0
    assert "".join(ANSWER) in out.getvalue()
    assert "> hello" in out.getvalue()
    assert "[completed · 30 tokens]" in out.getvalue()
    assert "connected to room w" in err.getvalue()
    assert (await other.wait_turn_end()).text() == "".join(ANSWER)
    await other.close()


async def test_watch_reports_a_refused_prompt(server: TestServer) -> None:
    """A prompt the server refuses makes `watch` print the error and exit 1."""
    out, err = io.StringIO(), io.StringIO()
    url = str(server.make_url("/"))
    code = await asyncio.wait_for(watch(url, "w2", prompt="   ", out=out, err=err), 10)
    assert code == 1
    assert "error bad_request" in err.getvalue()


def test_help_and_config_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--help lists the commands; a bad config exits 2 with the key named."""
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "mock-upstream", "watch"):
        assert command in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[upstream]\nmodle = 'x'\n")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "upstream.modle" in capsys.readouterr().err
