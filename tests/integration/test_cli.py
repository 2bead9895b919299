"""The command line: `serve` in demo mode end to end, `watch`, and helpful errors."""

from __future__ import annotations

import asyncio
import contextlib
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
from server.tools.mock_scenarios import answer_text
from server.tools.mock_upstream import MOCK_STATS, MockSettings, start_mock_upstream
from server.tools.watch import watch

from .conftest import viewer
from .fake_upstream import ANSWER
from .viewer import Viewer

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


@contextlib.asynccontextmanager
async def serving(
    args: list[str], env_extra: dict[str, str]
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m server serve ARGS` with no key and no FANOUT_ setting but ``env_extra``."""
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("FANOUT_")
    }
    env["FANOUT_UPSTREAM_DEMO_TTFT"] = "0.05"
    env["FANOUT_UPSTREAM_DEMO_TOKENS_PER_SECOND"] = "400"
    env.update(env_extra)
    proc = _spawn(["serve", "--port", str(port), *args], env)
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


@pytest.fixture
async def demo_server() -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m server serve` with no key and no URL, as `make run` starts it."""
    async with serving([], {}) as served:
        yield served


async def test_demo_mode_serves_two_viewers_from_the_mock(
    demo_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    """With no key and no URL the server says DEMO MODE and two viewers get one answer."""
    url, proc = demo_server
    async with aiohttp.ClientSession() as session:
        ws = url.replace("http", "ws") + "/api/rooms/demo/ws"
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


async def test_demo_mode_on_the_responses_api_serves_from_the_mock() -> None:
    """FANOUT_UPSTREAM_API=responses in demo mode: the built-in mock answers two viewers."""
    async with (
        serving([], {"FANOUT_UPSTREAM_API": "responses"}) as (url, proc),
        aiohttp.ClientSession() as session,
    ):
        ws = url.replace("http", "ws") + "/api/rooms/demo/ws"
        a = await Viewer(session, ws).connect()
        b = await Viewer(session, ws).connect()
        await a.send({"type": "prompt", "content": "Tell me a joke"})
        turns = [await v.wait_turn_end() for v in (a, b)]
        for turn in turns:
            assert turn.status == "completed"
            assert turn.text() == answer_text("Tell me a joke", 0)
        end = turns[0].end
        assert end is not None
        assert end["usage"]["total_tokens"] > 0
        # Responses usage: its token details come along, which the chat mock does not send.
        assert end["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
        # A chat-only option is refused: the rooms speak the Responses API.
        await a.send({"type": "prompt", "content": "two, please", "id": "p-n", "options": {"n": 2}})
        await a.wait(lambda v: bool(v.errors))
        assert [(e["code"], e["ref"]) for e in a.errors] == [("bad_request", "p-n")]
        assert "'n'" in a.errors[0]["message"]
        for v in (a, b):
            await v.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        assert proc.stderr is not None
        assert "DEMO MODE" in proc.stderr.read().decode()
        assert proc.returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "api"),
    [
        (["--upstream-api", "responses"], {}, "responses"),
        ([], {"FANOUT_UPSTREAM_API": "responses"}, "responses"),
        (["--upstream-api", "responses"], {"FANOUT_UPSTREAM_API": "chat"}, "responses"),
        (["--upstream-api", "chat"], {"FANOUT_UPSTREAM_API": "responses"}, "chat"),
    ],
    ids=["flag", "environment", "flag-over-environment", "chat-flag-over-environment"],
)
async def test_the_upstream_api_comes_from_the_flag_or_the_environment(
    args: list[str], env: dict[str, str], api: str
) -> None:
    """`serve --upstream-api` and FANOUT_UPSTREAM_API pick the endpoint a room's prompt calls."""
    settings = MockSettings(tokens_per_second=200.0, ttft=0.02)
    runner, mock_url = await start_mock_upstream("127.0.0.1", 0, settings)
    try:
        async with (
            serving(["--upstream-url", mock_url, *args], env) as (url, _),
            aiohttp.ClientSession() as session,
        ):
            v = await Viewer(session, url.replace("http", "ws") + "/api/rooms/api/ws").connect()
            await v.send({"type": "prompt", "content": "Which API?", "model": "mock"})
            turn = await v.wait_turn_end()
            assert (turn.status, turn.text()) == ("completed", answer_text("Which API?", 0))
            await v.close()
        stats = runner.app[MOCK_STATS]
        made = {"chat": stats.requests, "responses": stats.responses_creates}
        assert made == {"chat": int(api == "chat"), "responses": int(api == "responses")}
    finally:
        await runner.cleanup()


def test_upstream_api_errors_are_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad --upstream-api or FANOUT_UPSTREAM_API, or background on chat, exits 2 saying why."""
    for name in [k for k in os.environ if k.startswith("FANOUT_")]:
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--upstream-api", "graphql"])
    assert exc.value.code == 2
    assert "--upstream-api: invalid choice: 'graphql'" in capsys.readouterr().err
    monkeypatch.setenv("FANOUT_UPSTREAM_API", "graphql")
    assert main(["serve"]) == 2
    assert (
        "configuration error: upstream.api: expected chat or responses, got 'graphql'"
        in capsys.readouterr().err
    )
    monkeypatch.setenv("FANOUT_UPSTREAM_API", "responses")
    monkeypatch.setenv("FANOUT_UPSTREAM_BACKGROUND", "true")
    assert main(["serve", "--upstream-api", "chat"]) == 2
    assert (
        "configuration error: upstream.background: needs upstream.api = 'responses'"
        in capsys.readouterr().err
    )


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
