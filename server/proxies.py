"""Trusted reverse proxies (``server.trusted_proxies``): the client's address, scheme and host.

Behind nginx or a load balancer every connection comes from the proxy. From a configured
proxy only, the client's address is taken from ``X-Forwarded-For`` (aiohttp-remotes'
``XForwardedFiltered``: the right-most address that is not itself a trusted proxy, with
``X-Forwarded-Proto`` and ``-Host`` beside it) or, without it, from RFC 7239 ``Forwarded``
(the same walk over the elements aiohttp parsed). From any other peer these headers change
nothing: a client cannot give itself another address, scheme or host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from aiohttp_remotes import XForwardedFiltered

from .guards import Handler

Network = IPv4Network | IPv6Network


def _address(value: str | None) -> IPv4Address | IPv6Address | None:
    """An IP address from a peer or a ``for=`` value (``[v6]:port``, ``v4:port``)."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ip_address(text)
    except ValueError:
        return None  # "unknown", an obfuscated "_id", garbage


def forwarded_client(
    elements: Sequence[Mapping[str, str]], trusted: Sequence[Network]
) -> dict[str, str]:
    """What RFC 7239 ``Forwarded`` elements say about the client (``remote``, ``scheme``,
    ``host``): the right-most element whose ``for`` is not a trusted proxy (the left-most
    when all are); nothing when that element names no address."""
    chosen: Mapping[str, str] | None = None
    for element in reversed(elements):
        chosen = element
        address = _address(element.get("for"))
        if address is None or not any(address in net for net in trusted):
            break
    if chosen is None:
        return {}
    address = _address(chosen.get("for"))
    if address is None:
        return {}
    out = {"remote": str(address)}
    if chosen.get("proto"):
        out["scheme"] = chosen["proto"].lower()
    if chosen.get("host"):
        out["host"] = chosen["host"]
    return out


def trusted_proxies(entries: Sequence[str]) -> Middleware | None:
    """The middleware for ``server.trusted_proxies`` (None when the list is empty)."""
    if not entries:
        return None
    networks = [ip_network(entry, strict=False) for entry in entries]
    x_forwarded = XForwardedFiltered(set(networks))

    @web.middleware
    async def from_trusted_proxies(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = _address(request.remote)
        if peer is None or not any(peer in net for net in networks):
            return await handler(request)  # not a proxy of ours: its headers mean nothing
        if hdrs.X_FORWARDED_FOR in request.headers:
            return await x_forwarded.middleware(request, handler)
        overrides = forwarded_client(request.forwarded, networks)
        if overrides:
            request = request.clone(**overrides)  # type: ignore[arg-type]
        return await handler(request)

    return from_trusted_proxies
