"""Fixtures: the fake upstream, a fanout server pointed at it, and Debian's Chromium.

One Chromium serves the whole session (launching it per test would cost a second each), so
these tests and their fixtures run on the session's event loop: every module sets
``pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]``. Each test
still gets its own fake upstream, server and browser contexts.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    async_playwright,
)

from tests.integration.fake_upstream import FakeUpstream

from .harness import chromium_missing_reason, launch_chromium, must_have_chromium, start_server

TIMEOUT_MS = 10_000


@pytest_asyncio.fixture(loop_scope="session")
async def upstream() -> AsyncIterator[FakeUpstream]:
    """The fake upstream, listening."""
    fake = FakeUpstream()
    await fake.start()
    yield fake
    fake.release.set()
    await fake.close()


@pytest_asyncio.fixture(loop_scope="session")
async def server(upstream: FakeUpstream) -> AsyncIterator[TestServer]:
    """A fanout server pointed at the fake upstream."""
    srv = await start_server(upstream.base_url)
    yield srv
    await srv.close()


@pytest_asyncio.fixture(loop_scope="session")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; skipped (failed in CI) when it is not installed."""
    reason = chromium_missing_reason()
    if reason is not None:
        if must_have_chromium():
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as pw:
        chromium = await launch_chromium(pw)
        yield chromium
        await chromium.close()


@dataclass
class RoomPage:
    """A browser page on a room, with the console errors and page errors it produced."""

    page: Page
    context: BrowserContext
    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def turn(self, index: int = -1) -> Locator:
        """The index-th turn (the last by default)."""
        turns = self.page.locator("#turns > li.turn")
        return turns.last if index == -1 else turns.nth(index)

    def answer(self, turn: int = -1, choice: int = 0) -> Locator:
        """The rendered answer of one choice of one turn."""
        return self.turn(turn).locator(f'.choice[data-index="{choice}"] .content')

    async def prompt(self, text: str) -> None:
        """Type a prompt and press Enter."""
        box = self.page.get_by_label("Prompt", exact=True)
        await box.fill(text)
        await box.press("Enter")

    async def stats(self) -> dict[str, int]:
        """The page client's counters (connects, recovered, snapshots, gaps, duplicates)."""
        result: dict[str, int] = await self.page.evaluate("() => ({...window.fanoutClient.stats})")
        return result

    async def model_text(self, turn: int = -1, choice: int = 0) -> str:
        """The raw text the page's client holds for one choice of one turn."""
        text: str = await self.page.evaluate(
            "([t, c]) => window.fanoutClient.turnList().at(t).choices[c].content", [turn, choice]
        )
        return text

    def allow(self, pattern: str) -> None:
        """Tolerate console errors matching ``pattern`` (expected ones, like a refused socket)."""
        self.allowed.append(re.compile(pattern))

    def unexpected_problems(self) -> list[str]:
        """Console and page errors not allowed by ``allow``."""
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]


OpenRoom = Callable[..., Awaitable[RoomPage]]


@pytest_asyncio.fixture(loop_scope="session")
async def open_room(browser: Browser, server: TestServer) -> AsyncIterator[OpenRoom]:
    """Open a room page in a new browser context (its own cookies, cache and network)."""
    contexts: list[BrowserContext] = []

    async def open_(room: str, *, path: str | None = None, **context_options: Any) -> RoomPage:
        options = {"viewport": {"width": 1100, "height": 800}, **context_options}
        context = await browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = await context.new_page()
        rp = RoomPage(page, context)

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type in ("error", "warning"):
                rp.problems.append(f"console {msg.type}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: rp.problems.append(f"page error: {exc}"))
        await page.goto(str(server.make_url(path or f"/rooms/{room}")))
        return rp

    yield open_
    for context in contexts:
        await context.close()
