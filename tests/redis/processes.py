"""A fanout instance in a process of its own, so a test can SIGKILL it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp

from .redis_server import RedisServer

LEASE = 1.0


def serve_in_a_process(
    redis: RedisServer, upstream_url: str, port: int, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    """``fanout serve`` on 127.0.0.1:``port`` with the lease of these tests; more flags, env."""
    environ = {
        **os.environ,
        "OPENAI_API_KEY": "sk-test-secret-key-0123456789",
        "FANOUT_BROKER_LEASE_SECONDS": str(LEASE),
        "FANOUT_UPSTREAM_MAX_RETRIES": "0",
        **env,
    }
    command = [
        sys.executable, "-m", "server", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--broker", redis.url, "--upstream-url", upstream_url, *args,
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def healthy(session: aiohttp.ClientSession, base: str, timeout: float = 20.0) -> None:
    """Wait until the instance at ``base`` answers ``/healthz``."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with session.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
