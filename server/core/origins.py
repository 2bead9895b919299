"""Origin and Host checks against cross-site WebSocket hijacking and DNS rebinding.

See PROTOCOL.md, "Auth" and "Defaults and details".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import ip_address
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_NAME = re.compile(r"[a-z0-9_.-]+")  # DNS names and IPv4 addresses, lower case
# Listen addresses that are no name a client could send (every interface).
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or None if malformed."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, own: str | None, allowed: Iterable[str]) -> bool:
    """True for no Origin (not a browser), the server's own origin, or an allowed one."""
    if origin is None:
        return True
    seen = normalize_origin(origin)
    if seen is None:
        return False
    return seen == own or seen in {normalize_origin(a) for a in allowed}


def split_host(value: str) -> tuple[str, int | None] | None:
    """The name and port of a ``Host`` value; None when it is not a plain one.

    The name is in lower case, without brackets or a final dot; plain means ``host[:port]``.
    """
    try:
        parts = urlsplit("//" + value.strip())
        port = parts.port
    except ValueError:
        return None
    name = (parts.hostname or "").rstrip(".")
    if not name or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    if not _NAME.fullmatch(name) and not _is_ipv6(name):
        return None
    return name, port


def _is_ipv6(name: str) -> bool:
    try:
        return ip_address(name).version == 6
    except ValueError:
        return False


def host_name(entry: str) -> str | None:
    """A configured host name as ``split_host`` gives it; None when it is none.

    An IP address counts, IPv6 with or without brackets; an entry with a port is none.
    """
    entry = entry.strip()
    if entry.count(":") > 1 and not entry.startswith("["):
        entry = f"[{entry}]"
    found = split_host(entry)
    return found[0] if found is not None and found[1] is None else None


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ip_address(name).is_loopback
    except ValueError:
        return False


class HostAllowlist:
    """The names this server answers to (PROTOCOL.md: a request for another host is 400).

    Loopback names (``localhost``, 127.0.0.0/8, ``::1``) are always in it, on any port: a page
    on a foreign name cannot make a browser send them (DNS rebinding changes what a name
    resolves to, not the name in ``Host``). The server's own origin is built from these names,
    never from whatever ``Host`` a request brings.
    """

    __slots__ = ("names",)

    def __init__(self, names: Iterable[str]) -> None:
        found = (host_name(n) for n in names if n not in WILDCARD_ADDRESSES)
        self.names = frozenset(n for n in found if n is not None)

    def allows(self, host: str | None) -> bool:
        """Whether a request's ``Host`` names this server."""
        return self.own_origin("http", host) is not None

    def own_origin(self, scheme: str, host: str | None) -> str | None:
        """``scheme://name[:port]`` for an allowed ``host``; None for any other."""
        found = split_host(host) if host is not None else None
        if found is None or not (found[0] in self.names or _is_loopback(found[0])):
            return None
        name, port = found
        if ":" in name:
            name = f"[{name}]"
        return normalize_origin(f"{scheme}://{name}" + ("" if port is None else f":{port}"))
