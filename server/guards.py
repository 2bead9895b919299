"""Request guards of ``auth.mode``, origins, prompt rates and connections per client.

Every check raises ClientError, which the edge turns into the HTTP error, error frame or
close code of PROTOCOL.md.
"""

from __future__ import annotations

import time
from collections import Counter

from aiohttp import web

from .auth import check_request
from .config import Config
from .core.auth_rules import Action
from .core.errors import ClientError
from .core.messages import Role
from .core.origins import origin_allowed
from .core.ratelimit import RateLimiter


def client_address(request: web.Request) -> str:
    """The peer's address (the key of per-client limits)."""
    return request.remote or "unknown"


def check_origin(request: web.Request, config: Config) -> None:
    """A browser's Origin must be the server's own or an allowed one.

    Raises:
        ClientError: ``forbidden`` (cross-site WebSocket hijacking and the like).
    """
    own = f"{request.scheme}://{request.host}"
    if not origin_allowed(request.headers.get("Origin"), own, config.server.allowed_origins):
        raise ClientError("forbidden", "this origin is not allowed")


def guard(request: web.Request, config: Config, room: str, action: Action) -> Role:
    """Origin, then token: the role the request may act with in ``room``."""
    check_origin(request, config)
    return check_request(request, config, room, action)


class PromptRate:
    """Prompts per client address, shared by the WebSocket, POST and the tap."""

    def __init__(self, config: Config) -> None:
        limits = config.limits
        self._limiter = RateLimiter(limits.prompts_per_minute, limits.prompt_burst)

    def check(self, address: str) -> None:
        """Spend one prompt for ``address``.

        Raises:
            ClientError: ``rate_limited`` (temporary) with how long to wait.
        """
        wait = self._limiter.take(address, time.monotonic())
        if wait is not None:
            raise ClientError(
                "rate_limited",
                "too many prompts; wait a moment",
                temporary=True,
                retry_after_ms=max(1, round(wait * 1000)),
            )


class ConnectionCount:
    """Open WebSocket and SSE connections per client address."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def acquire(self, address: str) -> bool:
        """Count one more connection; False (nothing counted) when at the limit."""
        if self.limit and self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        """One connection closed."""
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]
