"""Origin checks against cross-site WebSocket hijacking (PROTOCOL.md, "Auth")."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


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


def origin_allowed(origin: str | None, own: str, allowed: Iterable[str]) -> bool:
    """True for no Origin (not a browser), the server's own origin, or an allowed one."""
    if origin is None:
        return True
    seen = normalize_origin(origin)
    if seen is None:
        return False
    permitted = {normalize_origin(own)} | {normalize_origin(a) for a in allowed}
    return seen in permitted
