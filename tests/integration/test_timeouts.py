"""Upstream timeouts: silence before the body fails the turn; after it, truncates it."""

from __future__ import annotations

import aiohttp

from .conftest import ServerFactory, viewer
from .fake_upstream import ANSWER, FakeUpstream, Script, text_stream


async def test_silence_before_the_first_chunk_fails_the_turn(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Headers but no body within idle_timeout: turn.end failed with upstream_timeout."""
    server = await make_server(upstream__idle_timeout=0.3)
    upstream.always(Script(chunks=[], hang=True))
    a = await viewer(session, server, "t1")
    await a.send({"type": "prompt", "content": "anyone there?"})
    turn = await a.wait_turn_end(timeout=5)
    assert turn.status == "failed"
    assert turn.end is not None
    assert turn.end["error"]["code"] == "upstream_timeout"
    await a.close()


async def test_total_timeout_truncates_a_turn_that_keeps_streaming(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A turn still streaming at total_timeout ends truncated with the text so far kept."""
    server = await make_server(upstream__total_timeout=0.4)
    upstream.always(Script(chunks=text_stream(ANSWER * 100), gap=0.02, split=False))
    a = await viewer(session, server, "t2")
    await a.send({"type": "prompt", "content": "go on forever"})
    turn = await a.wait_turn_end(timeout=5)
    assert turn.status == "truncated"
    assert turn.end is not None
    assert turn.end["error"] is None
    assert 0 < len(turn.text()) < len("".join(ANSWER * 100))
    assert "".join(ANSWER * 100).startswith(turn.text())
    snapshot = await (await session.get(server.make_url("/api/rooms/t2"))).json()
    assert snapshot["turns"][0]["choices"][0]["content"] == turn.text()
    assert snapshot["turns"][0]["status"] == "truncated"
    await a.close()
