"""Trusted reverse proxies (``server.trusted_proxies``): the client's address, scheme and host.

Behind nginx or a load balancer every connection comes from the proxy. From a configured
proxy only, the client's address is taken from the one header the proxy writes
(``server.proxy_header``): ``X-Forwarded-For`` (aiohttp-remotes' ``XForwardedFiltered``: the
right-most address that is not itself a trusted proxy, with ``X-Forwarded-Proto`` and
``-Host`` beside it) or RFC 7239 ``Forwarded`` (the same walk over the elements aiohttp
parsed). The other header is ignored: a proxy passes on whatever the client sent in the header
it does not write, so believing it would let the client pick its own address. From any other
peer these headers change nothing: a client cannot give itself another address, scheme or host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from aiohttp_remotes import XForwardedFiltered

from server.http.guards import Handler

Network = IPv4Network | IPv6Network
PROXY_HEADERS = ("x-forwarded-for", "forwarded")
_X_FORWARDED = (hdrs.X_FORWARDED_FOR, hdrs.X_FORWARDED_PROTO, hdrs.X_FORWARDED_HOST)


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
    """What RFC 7239 ``Forwarded`` elements say about the client (``remote``, ``scheme``, ``host``).

    The right-most element whose ``for`` is not a trusted proxy (the left-most when all are);
    nothing when that element names no address.
    """
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


def _joined(request: web.Request) -> web.Request:
    """``request`` with each ``X-Forwarded-*`` header that came in several lines as one line.

    Several lines of a list header are one comma-separated list (RFC 9110, 5.3): a proxy that
    appends its own line instead of extending the client's is not at fault. aiohttp-remotes
    refuses repeated lines and logs that at ERROR, which a client could then trigger at will.
    """
    headers = request.headers
    if all(len(headers.getall(name, ())) < 2 for name in _X_FORWARDED):
        return request
    joined = headers.copy()
    for name in _X_FORWARDED:
        lines = headers.getall(name, ())
        if len(lines) > 1:
            joined[name] = ", ".join(lines)
    return request.clone(headers=joined)


def trusted_proxies(entries: Sequence[str], header: str = "x-forwarded-for") -> Middleware | None:
    """The middleware for ``server.trusted_proxies``, reading one header.

    The middleware for ``server.trusted_proxies`` (None when the list is empty), reading ``header``
    (``server.proxy_header``: ``x-forwarded-for`` or ``forwarded``) only.
    """
    if not entries:
        return None
    networks = [ip_network(entry, strict=False) for entry in entries]
    x_forwarded = XForwardedFiltered(set(networks))
    rfc7239 = header == "forwarded"

    @web.middleware
    async def from_trusted_proxies(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = _address(request.remote)
        if peer is None or not any(peer in net for net in networks):
            return await handler(request)  # not a proxy of ours: its headers mean nothing
        if not rfc7239:
            return await x_forwarded.middleware(_joined(request), handler)
        overrides = forwarded_client(request.forwarded, networks)
        if overrides:
            request = request.clone(**overrides)  # type: ignore[arg-type]
        return await handler(request)

    return from_trusted_proxies
