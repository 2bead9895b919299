"""One upstream stream per prompt, fanned out to every viewer, late joiners and resumers."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestServer

from .conftest import viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream

FULL = "".join(ANSWER)


async def test_two_viewers_late_joiner_and_resumer_rebuild_the_same_text(
    server: TestServer, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Two viewers, a late joiner and a resuming viewer all rebuild the upstream text once."""
    upstream.always(Script(chunks=text_stream(ANSWER), gap=0.03))
    a = await viewer(session, server, "demo")
    b = await viewer(session, server, "demo")
    resumer = await viewer(session, server, "demo")
    await a.send({"type": "prompt", "content": "Say hello", "id": "p-1"})
    await a.wait(lambda v: any(f["type"] == "delta" for f in v.frames))
    await resumer.close()
    late = await viewer(session, server, "demo")
    await asyncio.sleep(0.05)  # let deltas pass while the resumer is away
    await resumer.resume()
    for v in (a, b, late, resumer):
        turn = await v.wait_turn_end()
        assert turn.text() == FULL
        assert turn.status == "completed"
        assert v.problems == []
    welcome = [f for f in resumer.frames if f["type"] == "welcome"][-1]
    assert welcome["recovered"] is True
    assert len(upstream.requests) == 1
    for v in (a, b, late, resumer):
        await v.close()
