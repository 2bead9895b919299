"""Names of the protocol's scalar values and the room-name rule."""

from __future__ import annotations

import re
from typing import Literal, NewType

from .codes import ErrorCode
from .errors import ClientError

RoomName = NewType("RoomName", str)
TurnId = NewType("TurnId", str)
Seq = NewType("Seq", int)
# Which OpenAI API a turn's upstream stream speaks: Chat Completions chunks or Responses events.
UpstreamApi = Literal["chat", "responses"]

# PROTOCOL.md, "Words": the room-name grammar.
ROOM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_room_name(raw: str) -> RoomName:
    """Return ``raw`` as a RoomName.

    Raises:
        ClientError: ``bad_request`` when the name breaks the grammar.
    """
    if ROOM_NAME_RE.fullmatch(raw) is None:
        raise ClientError(
            ErrorCode.BAD_REQUEST, "room names are 1-64 of A-Z a-z 0-9 _ . - (no leading _ . -)"
        )
    return RoomName(raw)
