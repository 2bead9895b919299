"""Where ``fanout loadtest`` may aim: loopback only unless allowed, and a fanout server."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

import aiohttp

RESOLVE_SECONDS = 5.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


async def refusal(url: str, allow_remote: bool) -> str | None:
    """Why ``url`` may not be load-tested, or None: only loopback hosts, unless allowed.

    A name is resolved, and every address it has must be loopback (127.0.0.0/8 or ::1).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return f"not an http(s) or ws(s) URL: {url!r}"
    if allow_remote:
        return None
    host = parts.hostname
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM),
                RESOLVE_SECONDS,
            )
        except (OSError, TimeoutError):
            return f"{host} does not resolve here; pass --allow-remote to test another machine"
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    outside = sorted({str(a) for a in addresses if not _is_loopback(a)})
    if outside or not addresses:
        return (
            f"{host} is not a loopback address ({', '.join(outside) or 'no address'}); "
            "pass --allow-remote to load-test another machine"
        )
    return None


async def reachable(session: aiohttp.ClientSession, http: str) -> str | None:
    """None when the server answers ``GET /api/rooms``, else why not."""
    try:
        async with session.get(f"{http}/api/rooms", timeout=HTTP_TIMEOUT) as resp:
            if resp.status == 200:
                return None
            return f"{http}/api/rooms answered {resp.status}: is this a fanout server?"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"cannot reach {http}: {exc}"
