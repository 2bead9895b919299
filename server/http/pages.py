"""HTML pages rendered with aiohttp-jinja2 from web/templates, and their security headers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server.core.errors import ClientError
from server.core.types import parse_room_name
from server.http.keys import CONFIG, HUB

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

# The pages load only their own scripts, styles and images; model output can neither run
# script nor pull anything in. WebSockets go to the same server (ws: or wss:).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

EVERY_RESPONSE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# The icon is served from memory, never as a file. A browser fetches it in the background,
# often while the page (or the server) is going away, and aiohttp's FileResponse opens the file
# in an executor job that a cancelled prepare() does not wait for: the file it opened is never
# closed and the garbage collector reports it (ResourceWarning).
FAVICON_PATH = "/static/favicon.svg"
FAVICON = (WEB_DIR / "static" / "favicon.svg").read_bytes()
FAVICON_ETAG = hashlib.sha256(FAVICON).hexdigest()[:16]
FAVICON_HEADERS = {"Cache-Control": "public, max-age=86400", "ETag": f'"{FAVICON_ETAG}"'}

routes = web.RouteTableDef()


def setup_pages(app: web.Application) -> None:
    """Install the Jinja2 environment (autoescaping on), the static files and the headers."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(WEB_DIR / "templates")),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_routes(routes)  # before the static files: the favicon's route comes first
    app.router.add_static("/static/", WEB_DIR / "static", follow_symlinks=False)
    app.on_response_prepare.append(security_headers)


async def security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """Set nosniff and no referrer everywhere; a strict Content-Security-Policy on HTML pages.

    Not on a WebSocket's 101: it has no body to sniff and is no page to refer from, and the
    response object (headers included) lives as long as the connection.
    """
    if response.status == 101:
        return
    for name, value in EVERY_RESPONSE_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)


@routes.get(FAVICON_PATH)
async def favicon(request: web.Request) -> web.Response:
    """The site icon (SVG) from memory, cacheable for a day; 304 when the ETag matches."""
    tags = request.if_none_match
    if tags is not None and any(tag.value == FAVICON_ETAG for tag in tags):
        return web.Response(status=304, headers=FAVICON_HEADERS)
    return web.Response(body=FAVICON, content_type="image/svg+xml", headers=FAVICON_HEADERS)


def _error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return aiohttp_jinja2.render_template(
        "error.html", request, {"title": title, "message": message}, status=status
    )


@routes.get("/")
@aiohttp_jinja2.template("lobby.html")
async def lobby(request: web.Request) -> dict[str, Any]:
    """The lobby: rooms with their viewers and streaming state, and a field to open one."""
    config = request.app[CONFIG]
    rooms = sorted(request.app[HUB].rooms.values(), key=lambda r: r.state.name)
    return {
        "demo": config.demo,
        "model": config.upstream.model,
        "rooms": [
            {
                "name": r.state.name,
                "viewers": r.state.viewers,
                "streaming": r.state.streaming_turn is not None,
                "turns": r.state.turn_count,
            }
            for r in rooms
        ],
    }


@routes.get("/rooms")
async def open_room(request: web.Request) -> web.StreamResponse:
    """The lobby form without JavaScript: ``?name=R`` redirects to the room's page."""
    name = request.query.get("name", "").strip()
    try:
        room = parse_room_name(name)
    except ClientError as exc:
        return _error_page(request, 400, "Bad room name", exc.message)
    raise web.HTTPSeeOther(f"/rooms/{room}")


@routes.get("/rooms/{room}")
async def room_page(request: web.Request) -> web.StreamResponse:
    """A room: the conversation from the snapshot, growing live over the WebSocket."""
    config = request.app[CONFIG]
    try:
        room = parse_room_name(request.match_info["room"])
    except ClientError as exc:
        return _error_page(request, 400, "Bad room name", exc.message)
    return aiohttp_jinja2.render_template(
        "room.html",
        request,
        {
            "room": room,
            "demo": config.demo,
            "max_prompt_chars": config.limits.max_prompt_chars,
        },
    )
