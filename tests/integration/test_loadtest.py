"""``fanout loadtest`` against a real fanout server on loopback fed by the fake upstream.

The report, its files, slow readers that get 4000 and resume, refusals and failures.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.cli import main
from server.tools import loadtest
from server.tools.loadtest import LoadtestOptions, run_loadtest
from server.tools.loadtest_check import check
from server.tools.loadtest_target import refusal
from server.tools.rebuild import Rebuild

from .conftest import ServerFactory
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream

ROOT = Path(__file__).resolve().parents[2]
FULL = "".join(ANSWER)


def _url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def _run(**options: Any) -> tuple[loadtest.LoadtestResult, str, str]:
    out, err = io.StringIO(), io.StringIO()
    async with asyncio.timeout(60):
        result = await run_loadtest(LoadtestOptions(quiet=True, **options), out=out, err=err)
    return result, out.getvalue(), err.getvalue()


async def test_twenty_subscribers_two_rooms_two_prompts_pass_with_sane_numbers(
    server: TestServer, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """20 subscribers over 2 rooms, 2 prompts each.

    Exit 0, every number accounted for, and the JSON and HTML reports written.
    """
    result, out, _ = await _run(
        url=_url(server),
        subscribers=20,
        rooms=2,
        prompts=2,
        duration=30,
        json_path=tmp_path / "r.json",
        html_path=tmp_path / "r.html",
    )
    assert result.exit_code == 0, out
    report = result.report
    assert report is not None
    assert len(upstream.requests) == 4  # one upstream stream per prompt, not per subscriber
    lat = report["latency"]
    assert lat["connect_ms"]["n"] == 20
    assert lat["first_delta_ms"]["n"] == 20 * 2
    seqs_per_room = 2 * (1 + len(ANSWER) + 1)  # turn.start, deltas, turn.end per turn
    assert report["counts"]["seqs"] == 20 * seqs_per_room
    assert lat["lag_ms"]["n"] == 20 * seqs_per_room
    assert lat["skew_ms"]["n"] == 2 * seqs_per_room
    for stats in lat.values():
        assert 0 <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"] < 10_000
    assert 0 < lat["first_delta_ms"]["p50"] < 5_000
    assert report["counts"]["closes_4000"] == 0
    assert (report["checked"], report["turns"], report["ok"]) == (20, 4, True)
    assert "check          OK: 20 subscribers rebuilt 4 turn(s) exactly" in out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["ok"] is True
    assert saved["counts"] == report["counts"]
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 2
    assert "<script" not in page
    assert "http://" not in page.replace(_url(server), "").replace("http://www.w3.org", "")


# Big deltas, so that a reader that stops reading backs a small outbox up at once.
BIG = [f"<{i:04d}>" + "y" * 4090 for i in range(160)]


async def test_slow_readers_are_closed_with_4000_resume_and_still_pass(
    make_server: ServerFactory, upstream: FakeUpstream
) -> None:
    """With --slow-fraction, stalled readers get 4000, resume and end exact.

    With --slow-fraction, stalled readers are closed with 4000, resume with epoch/since, end with
    the exact text, and the run still exits 0.
    """
    upstream.always(Script(chunks=text_stream(BIG), gap=0, split=False))
    server = await make_server(
        limits__outbox_bytes=16 * 1024,
        limits__send_buffer_bytes=4096,
        limits__close_timeout_seconds=5.0,
    )
    result, out, _ = await _run(
        url=_url(server),
        subscribers=8,
        rooms=2,
        prompts=2,
        slow_fraction=0.25,
        slow_stall=0.5,
        duration=30,
    )
    assert result.exit_code == 0, out
    assert result.report is not None
    counts = result.report["counts"]
    assert counts["slow_subscribers"] == 2
    assert counts["closes_4000"] >= 1
    assert counts["resumed_recovered"] + counts["resumed_snapshot"] >= 1
    assert result.report["checked"] == 8


async def test_a_run_that_cannot_finish_in_time_exits_1(
    server: TestServer, upstream: FakeUpstream
) -> None:
    """A turn longer than --duration: the run stops by itself and exits 1, saying why."""
    upstream.always(Script(chunks=text_stream(ANSWER), gap=0.3))
    started = asyncio.get_running_loop().time()
    result, out, _ = await _run(url=_url(server), subscribers=4, duration=1.0)
    assert result.exit_code == 1
    assert asyncio.get_running_loop().time() - started < 15
    assert "reached --duration (1 s) during prompts" in out
    assert "check          FAILED" in out


def _frames(*frames: dict[str, Any]) -> Rebuild:
    rebuild = Rebuild()
    for frame in frames:
        rebuild.apply(frame)
    return rebuild


WELCOME = {"type": "welcome", "epoch": "e", "recovered": False, "seq": 0}
EMPTY = {"type": "snapshot", "epoch": "e", "seq": 0, "turns": []}
START = {"type": "turn.start", "seq": 1, "turn": "t"}
END = {"type": "turn.end", "seq": 4, "turn": "t", "status": "completed"}
FINAL = {
    "epoch": "e",
    "seq": 4,
    "turns": [
        {
            "id": "t",
            "status": "completed",
            "choices": [
                {
                    "index": 0,
                    "content": "Hello",
                    "reasoning": "",
                    "refusal": "",
                    "tool_calls": [],
                    "finish_reason": "stop",
                }
            ],
        }
    ],
}


def delta(seq: int, text: str, first: int | None = None) -> dict[str, Any]:
    """A delta frame."""
    frame = {"type": "delta", "seq": seq, "turn": "t", "choices": [{"index": 0, "content": text}]}
    return frame if first is None else {**frame, "first_seq": first}


@pytest.mark.parametrize(
    ("frames", "problem"),
    [
        ((WELCOME, EMPTY, START, delta(2, "Hel"), delta(3, "lo"), END), None),
        ((WELCOME, EMPTY, START, delta(3, "Hello", first=2), END), None),
        ((WELCOME, EMPTY, START, delta(2, "Hel"), END), "gap: seq 2 then 4"),
        ((WELCOME, EMPTY, START, delta(2, "Hel"), delta(2, "Hel"), delta(3, "lo"), END), "dupl"),
        ((WELCOME, EMPTY, START, delta(2, "Hel"), delta(3, "p!"), END), "content differs"),
        ((WELCOME, EMPTY, START, delta(2, "Hel"), delta(3, "lo")), "reached seq 3"),
        ((WELCOME, EMPTY), "turn t: never seen"),
    ],
    ids=["exact", "merged", "gap", "duplicate", "wrong text", "behind", "missing turn"],
)
def test_the_checker_finds_gaps_duplicates_and_wrong_text(
    frames: tuple[dict[str, Any], ...], problem: str | None
) -> None:
    """check() passes an exact rebuild and names a gap, a duplicate or a wrong text."""
    reasons = check(_frames(*frames), FINAL)
    if problem is None:
        assert reasons == []
    else:
        assert any(problem in r for r in reasons), reasons


@pytest.mark.parametrize(
    ("url", "allow", "refused"),
    [
        ("http://127.0.0.1:8080", False, False),
        ("http://127.3.4.5:8080", False, False),
        ("ws://[::1]:8080", False, False),
        ("http://localhost:8080", False, False),
        ("http://192.0.2.1:8080", False, True),
        ("http://example.com", False, True),
        ("ftp://127.0.0.1", False, True),
        ("http://192.0.2.1:8080", True, False),
    ],
)
async def test_only_loopback_targets_unless_allowed(url: str, allow: bool, refused: bool) -> None:
    """Hosts that are not loopback (after resolving) are refused without --allow-remote."""
    assert (await refusal(url, allow) is not None) is refused


async def test_a_remote_target_exits_2_without_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """http://example.com without --allow-remote: exit 2, and no HTTP session is even made."""

    def no_session(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(aiohttp, "ClientSession", no_session)
    result, _, err = await _run(url="http://example.com")
    assert result.exit_code == 2
    assert result.report is None
    assert "--allow-remote" in err


def test_the_cli_refuses_a_remote_target_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`fanout loadtest --url http://192.0.2.1` exits 2 and says why."""
    assert main(["loadtest", "--url", "http://192.0.2.1", "--quiet"]) == 2
    assert "not a loopback address" in capsys.readouterr().err


async def test_python_m_server_loadtest_runs_against_a_real_server(
    server: TestServer, tmp_path: Path
) -> None:
    """`python -m server loadtest ...` in a subprocess: exit 0, the table, the JSON file."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "loadtest",
        "--url",
        _url(server),
        "--subscribers",
        "6",
        "--rooms",
        "2",
        "--prompts",
        "1",
        "--duration",
        "30",
        "--json",
        str(tmp_path / "r.json"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert b"check          OK: 6 subscribers rebuilt 2 turn(s) exactly" in out
    assert b"connected 6/6" in err  # the progress line
    assert json.loads((tmp_path / "r.json").read_text())["latency"]["connect_ms"]["n"] == 6


@pytest.mark.parametrize(("rooms", "prompts"), [(20, 3), (10, 2)])
async def test_the_load_tester_passes_against_a_default_server(
    server: TestServer, upstream: FakeUpstream, rooms: int, prompts: int
) -> None:
    """The issue's loadtest commands pass against the default limits.

    `fanout loadtest --rooms 20 --prompts 3` (and `--rooms 10 --prompts 2`), 100 subscribers from
    one address, pass against the default limits: no 429, no 4503.
    """
    result, out, _ = await _run(
        url=_url(server), subscribers=100, rooms=rooms, prompts=prompts, duration=60
    )
    assert result.exit_code == 0, out
    assert result.report is not None
    assert result.report["turns"] == rooms * prompts
    assert len(upstream.requests) == rooms * prompts
