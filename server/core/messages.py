"""Protocol messages as frozen structs (PROTOCOL.md, "WebSocket"): the one spelling of the wire.

Each message's fields are written once, here, in the order PROTOCOL.md shows them; ``codec``
encodes and decodes them from these definitions (msgspec), and the wire ``type`` of a message
is its struct tag. Fields with a default are left out of the frame while they hold it (a
delta carries only the strings that grew), except in ``ErrorFrame``, whose every member is
always sent. Raw dicts never travel past the codec, except the upstream's ``usage`` object,
which is passed through as the provider reported it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType
from msgspec.structs import force_setattr

TurnStatus = Literal["streaming", "completed", "cancelled", "failed", "truncated"]
Role = Literal["viewer", "publisher", "admin"]
TurnKind = Literal["room", "tap"]  # started by a room's prompt, or watched through the tap
Usage = dict[str, Any]


class _Part(Struct, frozen=True, omit_defaults=True):
    """A part of a message: fields at their default are not written."""


class _Message(Struct, frozen=True, tag_field="type", omit_defaults=True):
    """A frame: its wire ``type`` is the struct's tag, written first."""


class ToolCallDelta(_Part, frozen=True):
    """What grew in one tool call: ``arguments`` appends, ``id`` and ``name`` are set once."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


class ChoiceDelta(_Part, frozen=True):
    """What grew in one choice; fields that did not grow are None (or empty)."""

    index: int
    content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


class ToolCallView(_Part, frozen=True):
    """A tool call as accumulated so far."""

    index: int
    id: str | None
    name: str | None
    arguments: str


class ChoiceView(_Part, frozen=True):
    """A choice as accumulated so far."""

    index: int
    content: str
    reasoning: str
    refusal: str
    tool_calls: tuple[ToolCallView, ...]
    finish_reason: str | None


class ErrorInfo(_Part, frozen=True):
    """Why a turn failed, with no secrets in it; ``temporary`` when trying later may work.

    A temporary error carries ``retry_after_ms`` too, null when unknown; another error carries
    only ``code`` and ``message`` (docs/protocol.md, "turn.end error extension"), so
    ``retry_after_ms`` stays unset unless ``temporary`` is set with it.
    """

    code: str
    message: str
    temporary: bool = False
    retry_after_ms: int | UnsetType | None = UNSET


def temporary_error(code: str, message: str, retry_after_ms: int | None) -> ErrorInfo:
    """An error that may pass, with how long to wait (None when the upstream did not say)."""
    return ErrorInfo(code, message, temporary=True, retry_after_ms=retry_after_ms)


class TurnEnding(Struct, frozen=True):
    """How an upstream event ended a turn: its status and, for ``failed``, why (not sent)."""

    status: TurnStatus
    error: ErrorInfo | None = None


class ResponsePosition(Struct, frozen=True):
    """Where a turn's Responses stream has been read to (kept by the broker, not sent).

    Another instance re-attaches to the same upstream response from here
    (``starting_after``) and goes on with the turn: ``items`` and ``outputs`` are the tool
    calls' indexes by function-call item id and output position, so arguments that follow
    extend the calls already shown.
    """

    turn: str
    response_id: str
    after: int
    items: dict[str, int] = {}
    outputs: dict[int, int] = {}


class TurnView(_Part, frozen=True):
    """A turn inside a snapshot: everything needed to redraw it."""

    id: str
    status: TurnStatus
    prompt: str
    model: str
    started_at: float
    ended_at: float | None
    choices: tuple[ChoiceView, ...]
    usage: Usage | None
    error: ErrorInfo | None


class ChoiceEnd(_Part, frozen=True):
    """A choice's finish reason, as carried by ``turn.end``."""

    index: int
    finish_reason: str | None


# --- server to client -------------------------------------------------------------------


class Welcome(_Message, frozen=True, tag="welcome"):
    """First frame of every connection."""

    room: str
    epoch: str
    seq: int
    role: Role
    recovered: bool
    viewers: int


class Snapshot(_Message, frozen=True, tag="snapshot"):
    """The room's newest turns at ``seq``."""

    room: str
    epoch: str
    seq: int
    turns: tuple[TurnView, ...]


class TurnStart(_Message, frozen=True, tag="turn.start"):
    """A turn began streaming."""

    seq: int
    turn: str
    prompt: str
    model: str
    started_at: float


class Delta(_Message, frozen=True, tag="delta", kw_only=True):
    """Strings that grew; ``first_seq`` is set when it merges ``first_seq..seq``."""

    seq: int
    first_seq: int | None = None
    turn: str
    choices: tuple[ChoiceDelta, ...]

    def __post_init__(self) -> None:
        # A delta that merges nothing but itself does not say so (PROTOCOL.md).
        if self.first_seq == self.seq:
            force_setattr(self, "first_seq", None)


class TurnEnd(_Message, frozen=True, tag="turn.end"):
    """A turn ended; carries no text."""

    seq: int
    turn: str
    status: TurnStatus
    choices: tuple[ChoiceEnd, ...]
    usage: Usage | None
    error: ErrorInfo | None


class Presence(_Message, frozen=True, tag="presence"):
    """The room's viewer count changed."""

    viewers: int


class ErrorFrame(_Message, frozen=True, tag="error", omit_defaults=False):
    """A client frame could not be honoured."""

    code: str
    message: str
    temporary: bool = False
    retry_after_ms: int | None = None
    ref: str | None = None


SequencedEvent = TurnStart | Delta | TurnEnd
ServerMessage = Welcome | Snapshot | TurnStart | Delta | TurnEnd | Presence | ErrorFrame


# --- client to server -------------------------------------------------------------------


class PromptRequest(_Message, frozen=True, tag="prompt"):
    """Start a turn (WebSocket ``prompt`` frame or ``POST .../prompts`` body)."""

    content: str
    id: str | None = None
    model: str | None = None
    options: Mapping[str, Any] | None = None  # read-only once checked


class CancelRequest(_Message, frozen=True, tag="cancel"):
    """Cancel a streaming turn."""

    turn: str
    id: str | None = None


ClientMessage = PromptRequest | CancelRequest
