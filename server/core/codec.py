"""The one codec: server messages to UTF-8 JSON bytes, client frames back to messages.

Encoding happens once per event, whatever the number of subscribers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .codes import ErrorCode
from .errors import ClientError
from .messages import (
    CancelRequest,
    ChoiceDelta,
    ChoiceView,
    ClientMessage,
    Delta,
    ErrorInfo,
    Presence,
    PromptRequest,
    ServerMessage,
    Snapshot,
    ToolCallDelta,
    TurnEnd,
    TurnStart,
    TurnView,
    Welcome,
)
from .options import validate_options
from .text import check_client_value, is_text

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

MAX_ID_CHARS = 128

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _error(info: ErrorInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    out: dict[str, Any] = {"code": info.code, "message": info.message}
    if info.temporary:  # an extension of {code, message}: docs/protocol.md
        out["temporary"] = True
        out["retry_after_ms"] = info.retry_after_ms
    return out


def tool_call_delta_wire(call: ToolCallDelta) -> dict[str, Any]:
    """A tool-call delta with only the fields that grew."""
    out: dict[str, Any] = {"index": call.index}
    if call.id is not None:
        out["id"] = call.id
    if call.name is not None:
        out["name"] = call.name
    if call.arguments is not None:
        out["arguments"] = call.arguments
    return out


def choice_delta_wire(choice: ChoiceDelta) -> dict[str, Any]:
    """A choice delta with only the fields that grew."""
    out: dict[str, Any] = {"index": choice.index}
    if choice.content is not None:
        out["content"] = choice.content
    if choice.reasoning is not None:
        out["reasoning"] = choice.reasoning
    if choice.refusal is not None:
        out["refusal"] = choice.refusal
    if choice.tool_calls:
        out["tool_calls"] = [tool_call_delta_wire(c) for c in choice.tool_calls]
    return out


def _choice_view(choice: ChoiceView) -> dict[str, Any]:
    return {
        "index": choice.index,
        "content": choice.content,
        "reasoning": choice.reasoning,
        "refusal": choice.refusal,
        "tool_calls": [
            {"index": c.index, "id": c.id, "name": c.name, "arguments": c.arguments}
            for c in choice.tool_calls
        ],
        "finish_reason": choice.finish_reason,
    }


def turn_view_wire(turn: TurnView) -> dict[str, Any]:
    """The TURN object of PROTOCOL.md (snapshots and ``GET /api/rooms/{room}``)."""
    return {
        "id": turn.id,
        "status": turn.status,
        "prompt": turn.prompt,
        "model": turn.model,
        "started_at": turn.started_at,
        "ended_at": turn.ended_at,
        "choices": [_choice_view(c) for c in turn.choices],
        "usage": None if turn.usage is None else dict(turn.usage),
        "error": _error(turn.error),
    }


def snapshot_wire(snap: Snapshot) -> dict[str, Any]:
    """The snapshot object (also the body of ``GET /api/rooms/{room}``)."""
    return {
        "type": snap.type,
        "room": snap.room,
        "epoch": snap.epoch,
        "seq": snap.seq,
        "turns": [turn_view_wire(t) for t in snap.turns],
    }


def to_wire(msg: ServerMessage) -> dict[str, Any]:
    """The JSON object of a server message, keys in the order PROTOCOL.md shows."""
    if isinstance(msg, Delta):
        out: dict[str, Any] = {"type": msg.type, "seq": msg.seq}
        if msg.first_seq is not None and msg.first_seq != msg.seq:
            out["first_seq"] = msg.first_seq
        out["turn"] = msg.turn
        out["choices"] = [choice_delta_wire(c) for c in msg.choices]
        return out
    if isinstance(msg, TurnStart):
        return {
            "type": msg.type,
            "seq": msg.seq,
            "turn": msg.turn,
            "prompt": msg.prompt,
            "model": msg.model,
            "started_at": msg.started_at,
        }
    if isinstance(msg, TurnEnd):
        return {
            "type": msg.type,
            "seq": msg.seq,
            "turn": msg.turn,
            "status": msg.status,
            "choices": [{"index": c.index, "finish_reason": c.finish_reason} for c in msg.choices],
            "usage": None if msg.usage is None else dict(msg.usage),
            "error": _error(msg.error),
        }
    if isinstance(msg, Welcome):
        return {
            "type": msg.type,
            "room": msg.room,
            "epoch": msg.epoch,
            "seq": msg.seq,
            "role": msg.role,
            "recovered": msg.recovered,
            "viewers": msg.viewers,
        }
    if isinstance(msg, Snapshot):
        return snapshot_wire(msg)
    if isinstance(msg, Presence):
        return {"type": msg.type, "viewers": msg.viewers}
    return {
        "type": msg.type,
        "code": msg.code,
        "message": msg.message,
        "temporary": msg.temporary,
        "retry_after_ms": msg.retry_after_ms,
        "ref": msg.ref,
    }


def encode(msg: ServerMessage) -> bytes:
    """Encode a server message as one UTF-8 JSON text frame."""
    return dump_json(to_wire(msg))


def dump_json(obj: object) -> bytes:
    """Compact UTF-8 JSON, the one serialiser of the wire; it never fails on our own values.

    Client text is checked at the edge and upstream text is repaired as it arrives, so the
    first attempt is the one that runs. Should a lone surrogate or a non-finite number still
    reach here, it is written as U+FFFD or null instead of raising: a room's state change and
    the encoding of its event must succeed together (ARCHITECTURE.md, "Two rules").
    """
    try:
        return _dumps(obj).encode()
    except (UnicodeEncodeError, ValueError):
        return _dumps(wire_safe(obj)).encode()


def wire_safe(obj: object) -> object:
    """A copy of a JSON value with lone surrogates as U+FFFD and non-finite numbers as null."""
    if isinstance(obj, str):
        return _LONE_SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {wire_safe(k): wire_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [wire_safe(v) for v in obj]
    return obj


# --- decoding ---------------------------------------------------------------------------


def _optional_str(obj: Mapping[str, Any], key: str, ref: str | None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ClientError(ErrorCode.BAD_REQUEST, f"'{key}' must be a string", ref=ref)
    return value


def _ref_of(obj: Mapping[str, Any]) -> str | None:
    # An id that is not valid text cannot be echoed: the error frame could not be encoded.
    ref = obj.get("id")
    if isinstance(ref, str) and 0 < len(ref) <= MAX_ID_CHARS and is_text(ref):
        return ref
    return None


def parse_prompt(obj: Mapping[str, Any], *, max_prompt_chars: int) -> PromptRequest:
    """Validate a prompt object (a WebSocket frame or a POST body).

    Raises:
        ClientError: ``bad_request`` for a wrong field, ``too_large`` for an oversized prompt.
    """
    ref = _ref_of(obj)
    prompt_id = _optional_str(obj, "id", ref)
    if prompt_id is not None and not 0 < len(prompt_id) <= MAX_ID_CHARS:
        raise ClientError(
            ErrorCode.BAD_REQUEST, f"'id' must be 1-{MAX_ID_CHARS} characters", ref=ref
        )
    content = obj.get("content")
    if not isinstance(content, str):
        raise ClientError(ErrorCode.BAD_REQUEST, "'content' must be a string", ref=ref)
    if not content.strip():
        raise ClientError(ErrorCode.BAD_REQUEST, "'content' is empty", ref=ref)
    if max_prompt_chars and len(content) > max_prompt_chars:
        raise ClientError(
            ErrorCode.TOO_LARGE, f"'content' is over {max_prompt_chars} characters", ref=ref
        )
    model = _optional_str(obj, "model", ref)
    if model is not None and not model.strip():
        raise ClientError(ErrorCode.BAD_REQUEST, "'model' is empty", ref=ref)
    raw_options = obj.get("options")
    options: Mapping[str, object] | None = None
    if raw_options is not None:
        if not isinstance(raw_options, dict):
            raise ClientError(ErrorCode.BAD_REQUEST, "'options' must be an object", ref=ref)
        options = MappingProxyType(validate_options(raw_options, ref=ref))
    return PromptRequest(content=content, id=prompt_id, model=model, options=options)


def parse_cancel(obj: Mapping[str, Any]) -> CancelRequest:
    """Validate a cancel frame.

    Raises:
        ClientError: ``bad_request`` when ``turn`` is missing or not a string.
    """
    ref = _ref_of(obj)
    cancel_id = _optional_str(obj, "id", ref)
    turn = obj.get("turn")
    if not isinstance(turn, str) or not turn:
        raise ClientError(ErrorCode.BAD_REQUEST, "'turn' must be a non-empty string", ref=ref)
    return CancelRequest(turn=turn, id=cancel_id)


def load_json_object(text: str | bytes) -> dict[str, Any]:
    """Parse JSON that must be an object.

    Raises:
        ClientError: ``bad_request`` when it is not JSON or not an object.
    """
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ClientError(ErrorCode.BAD_REQUEST, "not valid JSON") from exc
    if not isinstance(obj, dict):
        raise ClientError(ErrorCode.BAD_REQUEST, "expected a JSON object")
    return obj


def load_client_object(text: str | bytes) -> dict[str, Any]:
    """Parse a client's JSON object (an HTTP body) and check its text and numbers.

    Raises:
        ClientError: ``bad_request`` when it is not a JSON object, or names the first string
            that is not valid Unicode text or number that is not finite.
    """
    obj = load_json_object(text)
    check_client_value(obj)
    return obj


def decode_client_frame(text: str, *, max_prompt_chars: int) -> ClientMessage:
    """Decode one client text frame.

    Raises:
        ClientError: ``bad_request`` (or ``too_large``) with ``ref`` when the frame had an id.
    """
    obj = load_json_object(text)
    check_client_value(obj, ref=_ref_of(obj))
    kind = obj.get("type")
    if kind == "prompt":
        return parse_prompt(obj, max_prompt_chars=max_prompt_chars)
    if kind == "cancel":
        return parse_cancel(obj)
    raise ClientError(ErrorCode.BAD_REQUEST, f"unknown frame type {kind!r:.40}", ref=_ref_of(obj))
