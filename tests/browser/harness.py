"""Shared set-up of the browser tests and the screenshot script: servers and Chromium."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Playwright

from server.app import create_app
from server.config import Secret, load_config

CHROMIUM = Path("/usr/bin/chromium")

# Debian's Chromium, never a downloaded one; nothing in the background talks to the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

API_KEY = "sk-test-secret-key-0123456789"


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if CHROMIUM.exists():
        return None
    return f"{CHROMIUM} is missing (`make test` installs Debian's chromium when run as root)"


def must_have_chromium() -> bool:
    """In CI a missing Chromium fails the run instead of skipping the browser tests."""
    return bool(os.environ.get("CI"))


async def start_server(upstream_url: str | None, **overrides: Any) -> TestServer:
    """A fanout server on 127.0.0.1 port 0, pointed at ``upstream_url`` (None: demo mode)."""
    settings: dict[str, object] = {
        "upstream.base_url": upstream_url or "",
        "upstream.max_retries": 0,
        "upstream.idle_timeout": 5.0,
    }
    settings.update({k.replace("__", "."): v for k, v in overrides.items()})
    config = load_config(None, {}, settings)
    if upstream_url is not None:
        config = dataclasses.replace(config, api_key=Secret(API_KEY))
    server = TestServer(create_app(config), host="127.0.0.1", port=0)
    await server.start_server()
    return server


async def launch_chromium(pw: Playwright) -> Browser:
    """Debian's Chromium, headless."""
    return await pw.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )
