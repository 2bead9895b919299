"""HTML pages rendered with aiohttp-jinja2 from web/templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from .keys import CONFIG, HUB

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

routes = web.RouteTableDef()


def setup_pages(app: web.Application) -> None:
    """Install the Jinja2 environment (autoescaping on) and the static files."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(WEB_DIR / "templates")),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_routes(routes)
    app.router.add_static("/static/", WEB_DIR / "static", follow_symlinks=False)


@routes.get("/")
@aiohttp_jinja2.template("lobby.html")
async def lobby(request: web.Request) -> dict[str, Any]:
    """The lobby: rooms with their viewers, and how to connect."""
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
