"""A real EventSource in Chromium: SSE resumes after a cut, nothing lost or doubled."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser

from server.core.codes import CloseCode
from server.http.keys import SSE_STREAMS
from server.tools.rebuild import SEQUENCED, Rebuild
from tests.integration.fake_upstream import FakeUpstream, Script, text_stream

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

WORDS = [f" w{i}" for i in range(80)]
FULL = "".join(WORDS)

# Runs in the page: an EventSource that logs every event it hears, as any SSE page would.
LISTEN = """
() => {
  window.log = [];
  window.opens = 0;
  const es = new EventSource("/api/rooms/es/events");
  es.onopen = () => { window.opens += 1; };
  for (const type of ["welcome", "snapshot", "turn.start", "delta", "turn.end", "presence"]) {
    es.addEventListener(type, (e) => window.log.push({type, id: e.lastEventId, data: e.data}));
  }
  window.es = es;
}
"""


def rebuild(log: list[dict[str, Any]]) -> tuple[str, list[str], list[bool]]:
    """The text of the room's last turn, the problems found, and each welcome's recovered.

    Problems are gaps in continuity and in event ids.
    """
    rebuilt = Rebuild(keep_text=True)
    problems, recovered = rebuilt.problems, []
    for entry in log:
        frame = json.loads(entry["data"])
        rebuilt.apply(frame)
        if frame["type"] == "welcome":
            recovered.append(frame["recovered"])
        elif frame["type"] in SEQUENCED and entry["id"] != f"{frame_epoch(log)}:{frame['seq']}":
            problems.append(f"id {entry['id']} for seq {frame['seq']}")
    turns = list(rebuilt.turns.values())
    return (turns[-1].text() if turns else ""), problems, recovered


def frame_epoch(log: list[dict[str, Any]]) -> str:
    """The epoch named by the first welcome."""
    return str(json.loads(log[0]["data"])["epoch"])


async def test_eventsource_resumes_after_the_server_cuts_the_stream(
    browser: Browser,
    server: TestServer,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """Cut mid-answer, Chromium's EventSource reconnects with Last-Event-ID and rebuilds once."""
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.05, split=False))
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    try:
        await page.goto(str(server.make_url("/")))
        await page.evaluate(LISTEN)
        await page.wait_for_function("window.log.some((e) => e.type === 'snapshot')")
        resp = await session.post(server.make_url("/api/rooms/es/prompts"), json={"content": "x"})
        assert resp.status == 202
        await page.wait_for_function(
            "window.log.filter((e) => e.type === 'delta').length >= 5", timeout=10_000
        )
        streams = server.app[SSE_STREAMS]
        for sub in tuple(streams):
            sub.close(CloseCode.INTERNAL_ERROR, "cut by the test")
        await page.wait_for_function("window.opens >= 2", timeout=15_000)
        await page.wait_for_function(
            "window.log.some((e) => e.type === 'turn.end')", timeout=20_000
        )
        log = await page.evaluate("window.log")
    finally:
        await context.close()
    text, problems, recovered = rebuild(log)
    assert problems == []
    assert recovered == [False, True]
    assert text == FULL
    assert len(upstream.requests) == 1
