"""Protocol messages as frozen, slotted dataclasses (PROTOCOL.md, "WebSocket").

Every message names its wire ``type`` as a class-level literal; ``codec`` turns them into
bytes once. Raw dicts never travel past the codec, except the upstream's ``usage`` object,
which is passed through as the provider reported it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

TurnStatus = Literal["streaming", "completed", "cancelled", "failed", "truncated"]
Role = Literal["viewer", "publisher", "admin"]
Usage = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """What grew in one tool call: ``arguments`` appends, ``id`` and ``name`` are set once."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(frozen=True, slots=True)
class ChoiceDelta:
    """What grew in one choice; fields that did not grow are None (or empty)."""

    index: int
    content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallView:
    """A tool call as accumulated so far."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class ChoiceView:
    """A choice as accumulated so far."""

    index: int
    content: str
    reasoning: str
    refusal: str
    tool_calls: tuple[ToolCallView, ...]
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a turn failed, with no secrets in it; ``temporary`` when trying later may work."""

    code: str
    message: str
    temporary: bool = False
    retry_after_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TurnEnding:
    """How an upstream event ended a turn: its status and, for ``failed``, why."""

    status: TurnStatus
    error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class TurnView:
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


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    """A choice's finish reason, as carried by ``turn.end``."""

    index: int
    finish_reason: str | None


# --- server to client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """First frame of every connection."""

    type: ClassVar[Literal["welcome"]] = "welcome"
    room: str
    epoch: str
    seq: int
    role: Role
    recovered: bool
    viewers: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The room's newest turns at ``seq``."""

    type: ClassVar[Literal["snapshot"]] = "snapshot"
    room: str
    epoch: str
    seq: int
    turns: tuple[TurnView, ...]


@dataclass(frozen=True, slots=True)
class TurnStart:
    """A turn began streaming."""

    type: ClassVar[Literal["turn.start"]] = "turn.start"
    seq: int
    turn: str
    prompt: str
    model: str
    started_at: float


@dataclass(frozen=True, slots=True)
class Delta:
    """Strings that grew; ``first_seq`` is set when it merges ``first_seq..seq``."""

    type: ClassVar[Literal["delta"]] = "delta"
    seq: int
    turn: str
    choices: tuple[ChoiceDelta, ...]
    first_seq: int | None = None


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """A turn ended; carries no text."""

    type: ClassVar[Literal["turn.end"]] = "turn.end"
    seq: int
    turn: str
    status: TurnStatus
    choices: tuple[ChoiceEnd, ...]
    usage: Usage | None
    error: ErrorInfo | None


@dataclass(frozen=True, slots=True)
class Presence:
    """The room's viewer count changed."""

    type: ClassVar[Literal["presence"]] = "presence"
    viewers: int


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """A client frame could not be honoured."""

    type: ClassVar[Literal["error"]] = "error"
    code: str
    message: str
    temporary: bool = False
    retry_after_ms: int | None = None
    ref: str | None = None


SequencedEvent = TurnStart | Delta | TurnEnd
ServerMessage = Welcome | Snapshot | TurnStart | Delta | TurnEnd | Presence | ErrorFrame


# --- client to server -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptRequest:
    """Start a turn (WebSocket ``prompt`` frame or ``POST .../prompts`` body)."""

    type: ClassVar[Literal["prompt"]] = "prompt"
    content: str
    id: str | None = None
    model: str | None = None
    options: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Cancel a streaming turn."""

    type: ClassVar[Literal["cancel"]] = "cancel"
    turn: str
    id: str | None = None


ClientMessage = PromptRequest | CancelRequest
