"""Tokens (JWT, HS256) and the per-request checks of ``auth.mode = "token"``.

The secret comes from ``FANOUT_AUTH_SECRET`` only. In open mode every request is allowed and
every connection is a publisher.
"""

from __future__ import annotations

import time
import uuid

import jwt
from aiohttp import web

from server.config import Config
from server.core.auth_rules import Claims, claims_from
from server.core.codes import ErrorCode
from server.core.errors import ClientError
from server.core.messages import Role

ALGORITHM = "HS256"


def mint_token(secret: str, room: str, role: Role, ttl: float, sub: str | None = None) -> str:
    """A signed token for ``room`` (or ``*``) with ``role``, valid for ``ttl`` seconds."""
    now = int(time.time())
    claims = {
        "room": room,
        "role": role,
        "sub": sub or f"fanout-{uuid.uuid4().hex[:8]}",
        "iat": now,
        "exp": now + max(1, int(ttl)),
    }
    claims_from(claims)  # refuse to mint what the server would refuse to read
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Claims:
    """The claims of a valid, unexpired token.

    Raises:
        ClientError: ``unauthorized`` for a missing, malformed, forged or expired token.
    """
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError as exc:
        raise ClientError(ErrorCode.UNAUTHORIZED, "the token has expired") from exc
    except jwt.PyJWTError as exc:
        raise ClientError(ErrorCode.UNAUTHORIZED, "the token is not valid") from exc
    return claims_from(payload)


def request_token(request: web.Request) -> str | None:
    """The token of a request: ``Authorization: Bearer T`` or the ``token`` query parameter."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def request_claims(request: web.Request, config: Config) -> Claims | None:
    """The request's verified claims in token mode; None in open mode.

    Raises:
        ClientError: ``unauthorized`` when token mode has no valid token.
    """
    if config.auth.mode != "token":
        return None
    assert config.auth_secret is not None  # the config loader insists on it
    token = request_token(request)
    if token is None:
        raise ClientError(ErrorCode.UNAUTHORIZED, "a token is required")
    return verify_token(config.auth_secret.reveal(), token)
