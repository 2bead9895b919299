"""Request guards.

The Host allowlist and the Origin check (one middleware), tokens, the budgets per principal and
connections per client.

Every check raises ClientError, which the edge turns into the HTTP error, error frame or
close code of PROTOCOL.md.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from server.config import Config
from server.core.auth_rules import Action, Claims, authorize
from server.core.codes import ErrorCode
from server.core.errors import ClientError
from server.core.messages import Role
from server.core.origins import HostAllowlist, origin_allowed
from server.core.ratelimit import RateLimiter
from server.core.types import RoomName
from server.http.auth import request_claims

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Load balancers' health checks often send an IP address as Host: /healthz answers any Host
# (and tells nothing a rebinding page could use).
ANY_HOST_PATHS = frozenset({"/healthz"})


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or what a trusted proxy reported (``proxies``)."""
    return request.remote or "unknown"


def host_allowlist(config: Config) -> HostAllowlist:
    """The names this server answers to.

    Its listen address, loopback names, and ``server.allowed_hosts``.
    """
    return HostAllowlist([config.server.host, *config.server.allowed_hosts])


def check_origin(request: web.Request, hosts: HostAllowlist, allowed: list[str]) -> None:
    """Whether a browser's Origin is the server's own or an allowed one.

    A browser's Origin must be the server's own (built from the allowlist, with the request's scheme
    and port) or one of ``server.allowed_origins``.

    Raises:
        ClientError: ``forbidden`` (cross-site WebSocket hijacking, DNS rebinding).
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if not origin_allowed(origin, hosts.own_origin(request.scheme, request.host), allowed):
        raise ClientError(ErrorCode.FORBIDDEN, "this origin is not allowed")


def host_and_origin(config: Config) -> Middleware:
    """The middleware that refuses another Host (400) and a foreign Origin (403) before any handler.

    PROTOCOL.md's closing of DNS rebinding and cross-site requests.
    """
    hosts = host_allowlist(config)
    allowed = config.server.allowed_origins

    # Not a coroutine: it checks, then hands back the handler's own awaitable, so a WebSocket
    # or SSE connection does not keep one more coroutine alive for its whole life (about 400
    # bytes per idle viewer). A refusal is raised to json_errors, which awaits this call.
    @web.middleware
    def guard_host_and_origin(
        request: web.Request, handler: Handler
    ) -> Awaitable[web.StreamResponse]:
        if request.path not in ANY_HOST_PATHS:
            if not hosts.allows(request.host):
                raise ClientError(
                    ErrorCode.BAD_REQUEST, "this server does not answer to that host name"
                )
            check_origin(request, hosts, allowed)
        return handler(request)

    return guard_host_and_origin


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request acts as: its role and the principal its budgets are counted for."""

    role: Role
    principal: str
    claims: Claims | None = None


def principal(request: web.Request, claims: Claims | None) -> str:
    """The token's ``sub`` in token mode, the client's address otherwise."""
    return f"sub:{claims.sub}" if claims is not None else client_address(request)


def guard(request: web.Request, config: Config, room: RoomName | None, action: Action) -> Caller:
    """Who may do ``action`` in ``room``.

    The one authorisation of every entry point (the HTTP API, the WebSocket, SSE, the tap and
    ``/v1/models``), always in the same order:

    1. Host, then Origin: ``host_and_origin``, the middleware that runs before any handler
       (it guards every request that carries an Origin, pages included, not only these).
    2. The token: missing, bad or expired is 401 (token mode only).
    3. The room, then the role (``authorize``): 403. ``room`` None checks the role alone.

    Call it as soon as the room's name is parsed, before anything else of the request is read
    (body, resume point): a request that fails several checks is refused for the first one,
    at every entry point alike.

    Raises:
        ClientError: ``unauthorized`` (401) or ``forbidden`` (403).
    """
    claims = request_claims(request, config)
    if claims is None:
        return Caller("publisher", principal(request, None))
    authorize(claims, room, action)
    return Caller(claims.role, principal(request, claims), claims)


class Budget:
    """A token bucket per principal for one kind of request (prompts, new rooms)."""

    def __init__(self, per_minute: float, burst: int, what: str) -> None:
        self._limiter = RateLimiter(per_minute, burst)
        self.what = what

    def spend(self, key: str) -> None:
        """Spend one for ``key``.

        Raises:
            ClientError: ``rate_limited`` (temporary) with how long to wait.
        """
        wait = self._limiter.take(key, time.monotonic())
        if wait is not None:
            raise ClientError(
                ErrorCode.RATE_LIMITED,
                f"too many {self.what}; wait a moment",
                temporary=True,
                retry_after_ms=max(1, round(wait * 1000)),
            )

    def give_back(self, key: str) -> None:
        """Return what ``key`` spent on something that did not count (a replay)."""
        self._limiter.give_back(key)


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
