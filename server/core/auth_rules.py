"""Who may do what (PROTOCOL.md, "Auth"): roles, rooms and token claims, without crypto."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .codes import ErrorCode
from .errors import ClientError
from .messages import Role
from .types import ROOM_NAME_RE

ROLES: tuple[Role, ...] = ("viewer", "publisher", "admin")
Action = Literal["view", "prompt"]


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token's claims."""

    room: str
    role: Role
    exp: float
    sub: str


def claims_from(payload: Mapping[str, object]) -> Claims:
    """Check the shape of a decoded token payload.

    Raises:
        ClientError: ``unauthorized`` when a claim is missing or wrong.
    """
    room, role, exp, sub = (payload.get(k) for k in ("room", "role", "exp", "sub"))
    if not isinstance(room, str) or not (room == "*" or ROOM_NAME_RE.fullmatch(room)):
        raise ClientError(ErrorCode.UNAUTHORIZED, "the token's 'room' claim is missing or invalid")
    if role not in ROLES:
        raise ClientError(ErrorCode.UNAUTHORIZED, "the token's 'role' claim is missing or invalid")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise ClientError(ErrorCode.UNAUTHORIZED, "the token has no 'exp' claim")
    if not isinstance(sub, str):
        raise ClientError(ErrorCode.UNAUTHORIZED, "the token's 'sub' claim is missing")
    return Claims(room=room, role=role, exp=float(exp), sub=sub)


def authorize(claims: Claims, room: str | None, action: Action) -> None:
    """Check that the token allows ``action`` in ``room``: the room first, then the role.

    ``room`` None (a request that names no room, such as ``/v1/models`` without ``X-Room``)
    checks the role alone.

    Raises:
        ClientError: ``forbidden`` for another room or a viewer that wants to prompt.
    """
    if room is not None and claims.role != "admin" and claims.room not in ("*", room):
        raise ClientError(ErrorCode.FORBIDDEN, "the token does not allow this room")
    if action == "prompt":
        may_prompt(claims.role)


def may_prompt(role: Role) -> None:
    """Check that a connection's role may prompt and cancel.

    Raises:
        ClientError: ``forbidden`` for a viewer.
    """
    if role == "viewer":
        raise ClientError(ErrorCode.FORBIDDEN, "viewers may watch but not prompt or cancel")
