"""A producer that dies without ending its turn: background mode lets another instance finish it.

The producing instance is SIGKILLed mid-stream. With ``upstream.background`` on a Responses
API upstream, the instance that takes the turn's lease over re-attaches to the same upstream
response after the last event the producer stored (``starting_after``) and finishes the turn:
same turn, seqs continuing, no text twice, none lost, one model run. Without background mode
the turn ends ``truncated``, as it always did.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from server.tools.mock_scenarios import answer_text
from tests.integration.conftest import Mock, MockFactory, ServerFactory, ws_url
from tests.integration.viewer import Viewer

from .processes import LEASE, healthy, serve_in_a_process
from .redis_server import RedisServer, free_port

PROMPT = "Tell me about the weather in Oslo"


@pytest.fixture
async def mock(start_mock: MockFactory) -> Mock:
    """The built-in mock upstream, paced so a turn lasts a few leases."""
    return await start_mock(tokens_per_second=12.0, ttft=0.05)


def seqs_continue(viewer: Viewer, turn: str) -> None:
    """The viewer's events of ``turn`` have consecutive seqs, each once, ending in turn.end."""
    seqs = [f["seq"] for f in viewer.frames if f.get("turn") == turn and "seq" in f]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert viewer.frames[-1]["type"] == "turn.end" or any(
        f["type"] == "turn.end" and f["turn"] == turn for f in viewer.frames
    )


async def kill_the_producer_mid_stream(
    make_server: ServerFactory,
    redis: RedisServer,
    session: aiohttp.ClientSession,
    upstream_url: str,
    *,
    background: bool,
) -> tuple[Viewer, str, Viewer]:
    """Two instances, a turn produced by the one in a process, SIGKILLed mid-stream.

    Returns the survivor's viewer, the turn, and a viewer that joined the survivor after.
    """
    settings: dict[str, Any] = {
        "broker__url": redis.url,
        "broker__lease_seconds": LEASE,
        "upstream__base_url": upstream_url,
        "upstream__api": "responses",
        "upstream__background": background,
    }
    survivor = await make_server(**settings)
    port = free_port()
    env = {"FANOUT_UPSTREAM_BACKGROUND": "true"} if background else {}
    producer = serve_in_a_process(redis, upstream_url, port, "--upstream-api", "responses", **env)
    try:
        base = f"http://127.0.0.1:{port}"
        await healthy(session, base)
        viewer = await Viewer(session, ws_url(survivor, "failover")).connect()
        posted = await session.post(f"{base}/api/rooms/failover/prompts", json={"content": PROMPT})
        assert posted.status == 202, await posted.text()
        turn = (await posted.json())["turn"]
        # About a third of the answer, then the producer dies without a word.
        full = answer_text(PROMPT, 0)
        await viewer.wait(lambda v: turn in v.turns and len(v.turns[turn].text()) > len(full) // 3)
        producer.send_signal(signal.SIGKILL)
        producer.wait(10)
        late = await Viewer(session, ws_url(survivor, "failover")).connect()
        return viewer, turn, late
    finally:
        producer.kill()
        producer.wait(10)


async def test_background_mode_finishes_the_turn_of_a_killed_producer(
    make_server: ServerFactory,
    redis_server: RedisServer,
    session: aiohttp.ClientSession,
    mock: Mock,
) -> None:
    """The survivor re-attaches after the stored event: the exact text, completed, one run."""
    url, stats = mock.url, mock.stats
    viewer, turn, late = await kill_the_producer_mid_stream(
        make_server, redis_server, session, url, background=True
    )
    full = answer_text(PROMPT, 0)
    for v in (viewer, late):
        done = await v.wait_turn_end(turn, timeout=30)
        assert done.end is not None
        assert done.end["status"] == "completed", done.end
        assert done.text() == full
        assert v.problems == []
    seqs_continue(viewer, turn)
    assert stats.responses_creates == 1  # one model run
    assert stats.responses_retrieves >= 1
    assert stats.last_starting_after is not None
    assert stats.last_starting_after > 0
    # The room goes on: the survivor streams the next prompt to completion.
    again = await viewer_prompt(session, viewer, "again")
    done = await viewer.wait_turn_end(again, timeout=30)
    assert done.text() == answer_text("again", 0)


async def test_without_background_mode_the_turn_ends_truncated(
    make_server: ServerFactory,
    redis_server: RedisServer,
    session: aiohttp.ClientSession,
    mock: Mock,
) -> None:
    """Without background mode there is nothing to re-attach to: truncated, text kept."""
    url, stats = mock.url, mock.stats
    viewer, turn, _ = await kill_the_producer_mid_stream(
        make_server, redis_server, session, url, background=False
    )
    done = await viewer.wait_turn_end(turn, timeout=30)
    assert done.end is not None
    assert done.end["status"] == "truncated"
    assert answer_text(PROMPT, 0).startswith(done.text())
    assert stats.responses_retrieves == 0
    assert viewer.problems == []


async def viewer_prompt(session: aiohttp.ClientSession, viewer: Viewer, content: str) -> str:
    """Prompt the viewer's room over HTTP on the viewer's instance; the new turn's id."""
    base = viewer.url.split("/api/")[0].replace("ws://", "http://")
    async with asyncio.timeout(10):
        posted = await session.post(f"{base}/api/rooms/failover/prompts", json={"content": content})
    assert posted.status == 202, await posted.text()
    turn: str = (await posted.json())["turn"]
    return turn
