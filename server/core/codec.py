"""The one codec: messages to UTF-8 JSON bytes and back, from their definitions in ``messages``.

Encoding happens once per event, whatever the number of subscribers. Decoding checks shape
and types against the same definitions: a client's frame (``decode_client_frame``), and a
broker's bytes, which another instance encoded (``decode_event``, ``decode_turn``); what does
not fit is refused, never trusted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from .codes import ErrorCode
from .errors import ClientError
from .messages import (
    CancelRequest,
    ClientMessage,
    PromptRequest,
    ResponsePosition,
    SequencedEvent,
    ServerMessage,
    Snapshot,
    TurnKind,
    TurnView,
)
from .options import validate_options
from .text import check_client_value, is_text

MAX_ID_CHARS = 128

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _mapping_as_dict(value: object) -> object:
    # The one type our values may hold that msgspec does not write itself: a read-only view.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


# Non-finite floats are written as null by msgspec itself; lone surrogates raise (below).
_encode = msgspec.json.Encoder(enc_hook=_mapping_as_dict).encode


def encode(msg: ServerMessage | Snapshot) -> bytes:
    """Encode a server message as one UTF-8 JSON text frame, ``type`` first, then ``seq``."""
    return dump_json(msg)


def to_wire(msg: ServerMessage | TurnView) -> dict[str, Any]:
    """The JSON object of a message or a TURN object (PROTOCOL.md), as a dict."""
    out: dict[str, Any] = msgspec.to_builtins(msg, enc_hook=_mapping_as_dict)
    return out


def dump_json(obj: object) -> bytes:
    """Compact UTF-8 JSON, the one serialiser of the wire; it never fails on our own values.

    Client text is checked at the edge and upstream text is repaired as it arrives, so the
    first attempt is the one that runs. Should a lone surrogate still reach here, it is
    written as U+FFFD instead of raising (and a non-finite number is always null): a room's
    state change and the encoding of its event must succeed together (ARCHITECTURE.md,
    "Two rules").
    """
    try:
        return _encode(obj)
    except UnicodeEncodeError:
        return _encode(wire_safe(msgspec.to_builtins(obj, enc_hook=_mapping_as_dict)))


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


# --- what brokers carry -----------------------------------------------------------------


class StoredTurn(msgspec.Struct, frozen=True):
    """An ended turn as a broker keeps it: its TURN object and whether the tap started it."""

    kind: TurnKind
    turn: TurnView


_event_decoder = msgspec.json.Decoder(SequencedEvent)
_turn_decoder = msgspec.json.Decoder(StoredTurn)
_position_decoder = msgspec.json.Decoder(ResponsePosition)


def decode_event(data: bytes) -> SequencedEvent:
    """A ``turn.start``, ``delta`` or ``turn.end`` frame as ``encode`` wrote it.

    Raises:
        ValueError: for anything else (msgspec's errors are ValueErrors).
    """
    return _event_decoder.decode(data)


def decode_position(data: bytes) -> ResponsePosition:
    """An upstream position as ``dump_json`` wrote it for the broker.

    Raises:
        ValueError: for anything else.
    """
    return _position_decoder.decode(data)


def stored_turn(view: TurnView, kind: TurnKind) -> bytes:
    """An ended turn as a broker keeps it."""
    return dump_json(StoredTurn(kind, view))


def turn_from_store(data: bytes) -> tuple[TurnView, TurnKind]:
    """Read back what ``stored_turn`` wrote.

    Raises:
        ValueError: for any other shape.
    """
    stored = _turn_decoder.decode(data)
    return stored.turn, stored.kind


# --- client frames ----------------------------------------------------------------------


def _ref_of(obj: Mapping[str, Any]) -> str | None:
    # An id that is not valid text cannot be echoed: the error frame could not be encoded.
    ref = obj.get("id")
    if isinstance(ref, str) and 0 < len(ref) <= MAX_ID_CHARS and is_text(ref):
        return ref
    return None


_MISSING = re.compile(r"^Object missing required field `([^`]*)`")


def _shape_error(exc: msgspec.ValidationError, ref: str | None) -> ClientError:
    """A type error as a message naming the field: "'content': expected `str`, got `int`"."""
    text = str(exc)
    missing = _MISSING.match(text)
    if missing is not None:
        return ClientError(ErrorCode.BAD_REQUEST, f"'{missing.group(1)}' is missing", ref=ref)
    what, _, where = text.partition(" - at `$")
    what = what[:1].lower() + what[1:]
    field = where.strip("`.")
    return ClientError(ErrorCode.BAD_REQUEST, f"'{field}': {what}" if field else what, ref=ref)


def _convert(obj: Mapping[str, Any], kind: object, ref: str | None) -> Any:
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as exc:
        raise _shape_error(exc, ref) from exc


def _checked_prompt(prompt: PromptRequest, ref: str | None, max_prompt_chars: int) -> PromptRequest:
    """What the types alone do not say: lengths, blank strings, the options' rules."""
    if prompt.id is not None and not 0 < len(prompt.id) <= MAX_ID_CHARS:
        raise ClientError(
            ErrorCode.BAD_REQUEST, f"'id' must be 1-{MAX_ID_CHARS} characters", ref=ref
        )
    if not prompt.content.strip():
        raise ClientError(ErrorCode.BAD_REQUEST, "'content' is empty", ref=ref)
    if max_prompt_chars and len(prompt.content) > max_prompt_chars:
        raise ClientError(
            ErrorCode.TOO_LARGE, f"'content' is over {max_prompt_chars} characters", ref=ref
        )
    if prompt.model is not None and not prompt.model.strip():
        raise ClientError(ErrorCode.BAD_REQUEST, "'model' is empty", ref=ref)
    if prompt.options is None:
        return prompt
    options = MappingProxyType(validate_options(prompt.options, ref=ref))
    return msgspec.structs.replace(prompt, options=options)


def parse_prompt(obj: Mapping[str, Any], *, max_prompt_chars: int) -> PromptRequest:
    """Validate a prompt object (a WebSocket frame or a POST body, whose ``type`` is ignored).

    Raises:
        ClientError: ``bad_request`` for a wrong field, ``too_large`` for an oversized prompt.
    """
    ref = _ref_of(obj)
    body = {k: v for k, v in obj.items() if k != "type"}
    prompt: PromptRequest = _convert(body, PromptRequest, ref)
    return _checked_prompt(prompt, ref, max_prompt_chars)


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
    ref = _ref_of(obj)
    check_client_value(obj, ref=ref)
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _CLIENT_TYPES:
        raise ClientError(ErrorCode.BAD_REQUEST, f"unknown frame type {kind!r:.40}", ref=ref)
    msg: ClientMessage = _convert(obj, ClientMessage, ref)
    if isinstance(msg, CancelRequest):
        if not msg.turn:
            raise ClientError(ErrorCode.BAD_REQUEST, "'turn' is empty", ref=ref)
        return msg
    return _checked_prompt(msg, ref, max_prompt_chars)


_CLIENT_TYPES = frozenset(t.__struct_config__.tag for t in (PromptRequest, CancelRequest))
