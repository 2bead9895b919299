"""The lobby, the room page's role handling, and the pages' security headers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import WebSocketRoute, expect

from server.http.pages import CONTENT_SECURITY_POLICY, FAVICON_PATH, WEB_DIR
from tests.integration.fake_upstream import ANSWER, FakeUpstream, Script, text_stream

from .conftest import OpenRoom
from .harness import start_server

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.browser
async def test_lobby_lists_rooms_live_validates_names_and_opens_rooms(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """The lobby refreshes viewers and streaming state, refuses bad names, opens good ones."""
    upstream.always(Script(chunks=text_stream(ANSWER * 40), gap=0.02))
    alpha = await open_room("alpha")
    lobby = await open_room("", path="/")
    row = lobby.page.locator('tr[data-room="alpha"]')
    await expect(row.locator(".viewers")).to_have_text("1")
    await expect(row.get_by_role("link", name="alpha")).to_have_attribute("href", "/rooms/alpha")
    await open_room("beta")
    await expect(lobby.page.locator('tr[data-room="beta"] .viewers')).to_have_text("1")
    await alpha.prompt("Talk for a while")
    await expect(row.locator('.badge[data-kind="streaming"]')).to_have_text("streaming")
    await alpha.page.get_by_role("button", name="Stop").click()
    await expect(row.locator(".state")).to_have_text("idle")

    field = lobby.page.get_by_label("Open or create a room")
    await field.fill("-bad name")
    await field.press("Enter")
    await expect(lobby.page.locator("#room-error")).to_contain_text("1 to 64")
    await expect(field).to_have_attribute("aria-invalid", "true")
    assert lobby.page.url.endswith("/")
    await field.fill("gamma.1")
    await expect(field).to_have_attribute("aria-invalid", "false")
    await field.press("Enter")
    await lobby.page.wait_for_url(re.compile(r"/rooms/gamma\.1$"))
    await expect(lobby.page.get_by_role("heading", level=1)).to_have_text("Room gamma.1")
    await expect(lobby.page.locator("#conn")).to_have_text("live")
    assert alpha.unexpected_problems() == []
    assert lobby.unexpected_problems() == []


@pytest.mark.browser
async def test_a_viewer_role_gets_no_prompt_box_or_stop_button(
    open_room: OpenRoom, upstream: FakeUpstream
) -> None:
    """When the welcome says "viewer", the page hides the prompt box and the Stop button."""
    upstream.always(Script(chunks=text_stream(ANSWER * 40), gap=0.02))
    publisher = await open_room("roles")
    viewer = await open_room("", path="/")

    async def as_viewer(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def relay(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "welcome":
                frame["role"] = "viewer"
            ws.send(json.dumps(frame))

        server.on_message(relay)

    await viewer.page.route_web_socket(re.compile(r"/api/rooms/roles/ws"), as_viewer)
    await viewer.page.goto(publisher.page.url)
    await expect(viewer.page.locator("#conn")).to_have_text("live")
    await expect(viewer.page.locator("#readonly")).to_be_visible()
    await expect(viewer.page.get_by_label("Prompt", exact=True)).to_be_hidden()
    await publisher.prompt("Go")
    await expect(publisher.page.get_by_role("button", name="Stop")).to_be_visible()
    await expect(viewer.answer()).to_contain_text("Hello")
    await expect(viewer.page.get_by_role("button", name="Stop")).to_be_hidden()
    await publisher.page.get_by_role("button", name="Stop").click()
    await expect(viewer.turn().locator('.badge[data-kind="cancelled"]')).to_be_visible()


class _Tags(HTMLParser):
    """Collects scripts and inline styles of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_styles = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        if tag == "style" or any(name == "style" for name, _ in attrs):
            self.inline_styles += 1


@pytest.mark.parametrize("path", ["/", "/rooms/demo"])
async def test_pages_have_a_strict_csp_and_no_inline_code(
    server: TestServer, session: aiohttp.ClientSession, path: str
) -> None:
    """HTML pages carry the CSP, nosniff and no-referrer, and only load scripts by src."""
    async with session.get(server.make_url(path)) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Frame-Options"] == "DENY"
        tags = _Tags()
        tags.feed(await resp.text())
    assert tags.scripts
    assert all((s.get("src") or "").startswith("/static/") for s in tags.scripts)
    assert all(s.get("type") == "module" for s in tags.scripts)
    assert tags.inline_styles == 0
    for directive in ("script-src 'self'", "style-src 'self'", "object-src 'none'"):
        assert directive in CONTENT_SECURITY_POLICY


async def test_static_modules_and_the_api_are_served_with_the_right_types(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """ES modules (.js and .mjs) are JavaScript (browsers insist, with nosniff); no CSP on JSON."""
    for path in (
        "/static/fanout-client.js",
        "/static/vendor/marked/marked.esm.js",
        "/static/vendor/dompurify/purify.es.mjs",
    ):
        async with session.get(server.make_url(path)) as resp:
            assert resp.status == 200, path
            assert resp.content_type in ("text/javascript", "application/javascript"), path
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    async with session.get(server.make_url("/api/rooms")) as resp:
        assert resp.content_type == "application/json"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "Content-Security-Policy" not in resp.headers


async def test_the_favicon_is_served_from_memory_with_its_type_and_cache_headers(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """The icon is the file's bytes as image/svg+xml, cacheable, and 304 for its own ETag."""
    url = server.make_url(FAVICON_PATH)
    async with session.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/svg+xml"
        assert await resp.read() == (WEB_DIR / "static" / "favicon.svg").read_bytes()
        assert resp.headers["Cache-Control"] == "public, max-age=86400"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        etag = resp.headers["ETag"]
    async with session.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert await resp.read() == b""
    async with session.get(url, headers={"If-None-Match": '"other"'}) as resp:
        assert resp.status == 200


async def test_room_names_are_checked_and_the_form_works_without_javascript(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    """A bad room name is a 400 page; /rooms?name=R redirects to the room's page."""
    async with session.get(server.make_url("/rooms/-nope")) as resp:
        assert resp.status == 400
        assert resp.content_type == "text/html"
        assert "Bad room name" in await resp.text()
    async with session.get(server.make_url("/rooms?name=ok.room"), allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/rooms/ok.room"
    async with session.get(server.make_url("/rooms?name=%3Cb%3E")) as resp:
        assert resp.status == 400
        assert "<b>" not in await resp.text()


async def test_demo_mode_shows_a_banner_on_both_pages(session: aiohttp.ClientSession) -> None:
    """In demo mode the lobby and the room page say the answers come from the mock."""
    demo = await start_server(None)
    try:
        for path in ("/", "/rooms/demo"):
            async with session.get(demo.make_url(path)) as resp:
                assert "Demo mode" in await resp.text()
    finally:
        await demo.close()
    plain = await start_server("http://127.0.0.1:9/v1")
    try:
        async with session.get(plain.make_url("/")) as resp:
            assert "Demo mode" not in await resp.text()
    finally:
        await plain.close()


@pytest.mark.browser
async def test_a_token_in_the_page_url_goes_to_the_socket_and_leaves_the_address_bar(
    open_room: OpenRoom,
) -> None:
    """?token=T is sent with the WebSocket (also after a reload) and removed from the URL."""
    page = await open_room("", path="/")
    sockets: list[str] = []
    page.page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.page.goto(page.page.url + "rooms/tok?token=abc.def")
    await expect(page.page.locator("#conn")).to_have_text("live")
    assert page.page.url.endswith("/rooms/tok")
    await page.page.reload()
    await expect(page.page.locator("#conn")).to_have_text("live")
    assert len(sockets) == 2
    assert all("token=abc.def" in url for url in sockets)
    assert page.unexpected_problems() == []
