"""Reloads and broken connections mid-stream: the answer ends up whole and never doubled."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import expect

from server.http.keys import SOCKETS
from tests.integration.fake_upstream import FakeUpstream, Script, text_stream
from tests.integration.viewer import Viewer

from .conftest import OpenRoom, RoomPage

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

WORDS = ["word0", *(f" word{i}" for i in range(1, 60))]
LONG = "".join(WORDS)


def deltas(viewer: Viewer) -> int:
    """How many delta frames a test viewer received."""
    return sum(1 for f in viewer.frames if f["type"] == "delta")


async def assert_whole_once(page: RoomPage) -> None:
    """The last turn completed with exactly the upstream text, and no seq went missing."""
    await expect(page.turn()).to_have_attribute("data-status", "completed")
    assert await page.answer().text_content() == LONG
    assert await page.model_text() == LONG
    stats = await page.stats()
    assert stats["gaps"] == 0
    assert stats["duplicates"] == 0
    assert await page.turn().locator(".badge").count() == 0


async def test_reloading_mid_stream_shows_the_answer_whole(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """A reload mid-stream starts from a snapshot with the text so far, then streams the rest."""
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.03))
    page = await open_room("reload")
    await page.prompt("Count")
    await expect(page.answer()).to_contain_text("word5")
    await page.page.reload()
    await expect(page.page.locator("#conn")).to_have_attribute("data-state", "live")
    assert await page.turn().get_attribute("data-status") == "streaming"
    await assert_whole_once(page)
    assert (await page.stats())["snapshots"] == 1
    assert page.unexpected_problems() == []
    assert len(upstream.requests) == 1


async def test_going_offline_mid_stream_resumes_without_loss_or_repeat(
    open_room: OpenRoom,
    upstream: FakeUpstream,
    server: TestServer,
    session: aiohttp.ClientSession,
) -> None:
    """Offline mid-stream, deltas pass by, back online: epoch/since resume, text intact."""
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.04))
    page = await open_room("offline")
    page.allow(r"WebSocket connection to .* failed")
    watcher = await Viewer(session, str(server.make_url("/api/rooms/offline/ws"))).connect()
    await page.prompt("Count")
    await expect(page.answer()).to_contain_text("word3")
    await page.context.set_offline(True)
    conn = page.page.locator("#conn")
    await expect(conn).to_have_attribute("data-state", "reconnecting")
    missed = deltas(watcher) + 5
    await watcher.wait(lambda v: deltas(v) >= missed)
    upstream.release.clear()  # hold the stream so the page comes back mid-turn
    await page.context.set_offline(False)
    await expect(conn).to_have_attribute("data-state", "live")
    assert await page.turn().get_attribute("data-status") == "streaming"
    upstream.release.set()
    await assert_whole_once(page)
    stats = await page.stats()
    assert stats["recovered"] >= 1
    assert stats["snapshots"] == 1
    assert page.unexpected_problems() == []
    await watcher.close()


@pytest.mark.parametrize("code", [1001, 1011])
async def test_server_closing_the_socket_mid_stream_resumes(
    open_room: OpenRoom, upstream: FakeUpstream, server: TestServer, code: int
) -> None:
    """The server closes the page's socket (1001 or 1011) mid-stream; it resumes, text intact."""
    upstream.always(Script(chunks=text_stream(WORDS), gap=0.03))
    page = await open_room("cut")
    await page.prompt("Count")
    await expect(page.answer()).to_contain_text("word3")
    upstream.release.clear()
    open_sockets = server.app[SOCKETS]
    sockets = tuple(open_sockets)
    assert len(sockets) == 1
    for ws in sockets:
        await ws.close(code=code, message=b"test cut")
    await page.page.wait_for_function(
        "() => window.fanoutClient.stats.connects >= 2 && window.fanoutClient.state === 'live'"
    )
    assert await page.turn().get_attribute("data-status") == "streaming"
    upstream.release.set()
    await assert_whole_once(page)
    stats = await page.stats()
    assert stats["recovered"] == 1
    assert stats["snapshots"] == 1
    assert page.unexpected_problems() == []
