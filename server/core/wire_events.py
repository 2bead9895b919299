"""Sequenced events and turn views back from their wire JSON.

Another instance encoded them (``codec.encode``) and a broker carried the bytes here; the
replica of the room rebuilds its state from them. Anything that does not have the shape the
codec writes is refused with ``ValueError``: a broker's bytes are data, not trusted objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar, cast, get_args

from .codec import dump_json, turn_view_wire
from .messages import (
    ChoiceDelta,
    ChoiceEnd,
    ChoiceView,
    Delta,
    ErrorInfo,
    SequencedEvent,
    ToolCallDelta,
    ToolCallView,
    TurnEnd,
    TurnStart,
    TurnStatus,
    TurnView,
)
from .room import TurnKind

T = TypeVar("T")
_STATUSES = frozenset(get_args(TurnStatus))


def _get(obj: Mapping[str, Any], key: str, kind: type[T] | tuple[type, ...]) -> T:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{key}: unexpected {type(value).__name__}")
    return cast(T, value)


def _opt(obj: Mapping[str, Any], key: str, kind: type[T]) -> T | None:
    return None if obj.get(key) is None else _get(obj, key, kind)


def _number(obj: Mapping[str, Any], key: str) -> float:
    return float(_get(obj, key, (int, float)))


def _objects(obj: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = obj.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ValueError(f"{key}: expected a list of objects")
    return items


def _error(raw: object) -> ErrorInfo | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError("error: expected an object")
    return ErrorInfo(
        code=_get(raw, "code", str),
        message=_get(raw, "message", str),
        temporary=bool(raw.get("temporary", False)),
        retry_after_ms=_opt(raw, "retry_after_ms", int),
    )


def _usage(raw: object) -> Mapping[str, object] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError("usage: expected an object")
    return dict(raw)


def _status(obj: Mapping[str, Any]) -> TurnStatus:
    status = _get(obj, "status", str)
    if status not in _STATUSES:
        raise ValueError(f"status: unknown {status!r}")
    return cast(TurnStatus, status)


def _choice_delta(raw: Mapping[str, Any]) -> ChoiceDelta:
    return ChoiceDelta(
        index=_get(raw, "index", int),
        content=_opt(raw, "content", str),
        reasoning=_opt(raw, "reasoning", str),
        refusal=_opt(raw, "refusal", str),
        tool_calls=tuple(
            ToolCallDelta(
                index=_get(c, "index", int),
                id=_opt(c, "id", str),
                name=_opt(c, "name", str),
                arguments=_opt(c, "arguments", str),
            )
            for c in _objects(raw, "tool_calls")
        ),
    )


def event_from_wire(obj: Mapping[str, Any]) -> SequencedEvent:
    """A ``turn.start``, ``delta`` or ``turn.end`` object as the codec wrote it.

    Raises:
        ValueError: for any other type or shape.
    """
    kind = obj.get("type")
    seq = _get(obj, "seq", int)
    turn = _get(obj, "turn", str)
    if kind == "turn.start":
        return TurnStart(
            seq=seq,
            turn=turn,
            prompt=_get(obj, "prompt", str),
            model=_get(obj, "model", str),
            started_at=_number(obj, "started_at"),
        )
    if kind == "delta":
        return Delta(
            seq=seq,
            turn=turn,
            choices=tuple(_choice_delta(c) for c in _objects(obj, "choices")),
            first_seq=_opt(obj, "first_seq", int),
        )
    if kind == "turn.end":
        return TurnEnd(
            seq=seq,
            turn=turn,
            status=_status(obj),
            choices=tuple(
                ChoiceEnd(_get(c, "index", int), _opt(c, "finish_reason", str))
                for c in _objects(obj, "choices")
            ),
            usage=_usage(obj.get("usage")),
            error=_error(obj.get("error")),
        )
    raise ValueError(f"not a sequenced event: {kind!r}")


def turn_view_from_wire(obj: Mapping[str, Any]) -> TurnView:
    """A TURN object (PROTOCOL.md) as ``codec.turn_view_wire`` wrote it.

    Raises:
        ValueError: for any other shape.
    """
    ended_at = obj.get("ended_at")
    return TurnView(
        id=_get(obj, "id", str),
        status=_status(obj),
        prompt=_get(obj, "prompt", str),
        model=_get(obj, "model", str),
        started_at=_number(obj, "started_at"),
        ended_at=None if ended_at is None else _number(obj, "ended_at"),
        choices=tuple(
            ChoiceView(
                index=_get(c, "index", int),
                content=_get(c, "content", str),
                reasoning=_get(c, "reasoning", str),
                refusal=_get(c, "refusal", str),
                tool_calls=tuple(
                    ToolCallView(
                        index=_get(t, "index", int),
                        id=_opt(t, "id", str),
                        name=_opt(t, "name", str),
                        arguments=_get(t, "arguments", str),
                    )
                    for t in _objects(c, "tool_calls")
                ),
                finish_reason=_opt(c, "finish_reason", str),
            )
            for c in _objects(obj, "choices")
        ),
        usage=_usage(obj.get("usage")),
        error=_error(obj.get("error")),
    )


def load_object(data: bytes) -> Mapping[str, Any]:
    """One JSON object from bytes.

    Raises:
        ValueError: when the bytes are not one JSON object.
    """
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    return cast(Mapping[str, Any], obj)


def stored_turn(view: TurnView, kind: TurnKind) -> bytes:
    """An ended turn as a broker keeps it: its TURN object and whether the tap started it."""
    return dump_json({"kind": kind, "turn": turn_view_wire(view)})


def turn_from_store(data: bytes) -> tuple[TurnView, TurnKind]:
    """Read back what ``stored_turn`` wrote.

    Raises:
        ValueError: for any other shape.
    """
    obj = load_object(data)
    kind = obj.get("kind")
    if kind not in ("room", "tap"):
        raise ValueError(f"kind: unknown {kind!r}")
    turn = obj.get("turn")
    if not isinstance(turn, Mapping):
        raise ValueError("turn: expected an object")
    return turn_view_from_wire(turn), cast(TurnKind, kind)
