"""A room's prompt as a Responses API request (``POST /v1/responses``).

The room keeps its conversation as chat messages (``RoomState.messages_for``); the Responses
API takes the system prompt as ``instructions`` and the rest as ``input`` items, the new
prompt last. A prompt's ``options`` (PROTOCOL.md, chat names) map onto their Responses names;
an option the Responses API lacks is refused, naming it, before any turn starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .codes import ErrorCode
from .errors import ClientError


def _same(name: str) -> Callable[[object, dict[str, Any]], None]:
    def put(value: object, body: dict[str, Any]) -> None:
        body[name] = value

    return put


def _max_output_tokens(value: object, body: dict[str, Any]) -> None:
    body["max_output_tokens"] = value


def _reasoning_effort(value: object, body: dict[str, Any]) -> None:
    body["reasoning"] = {"effort": value}


def _flat(value: object) -> object:
    """Chat nests an object's fields under its type, the Responses API has them beside it.

    ``{"type": "function", "function": {"name": ...}}`` becomes ``{"type": "function",
    "name": ...}``; so do ``custom`` tools and tool choices, ``allowed_tools`` and a
    ``json_schema`` response format. Anything else (a built-in tool, ``"auto"``, an object
    already flat) is returned as it is.
    """
    if isinstance(value, Mapping):
        kind = value.get("type")
        inner = value.get(kind) if isinstance(kind, str) else None
        if isinstance(inner, Mapping):
            return {**inner, "type": kind}
    return value


def _tool(tool: object) -> object:
    flat = _flat(tool)
    if flat is tool or not isinstance(flat, dict):
        return flat
    if flat["type"] == "custom" and "format" in flat:
        # A grammar format nests the same way: {"type": "grammar", "grammar": {...}}.
        flat["format"] = _flat(flat["format"])
    elif flat["type"] == "function":
        # A chat function without ``strict`` is non-strict; the Responses API would make an
        # unmarked one strict, rewriting its schema (every field required). Both keys are
        # required there, and a chat function may leave its parameters out (it takes none).
        flat.setdefault("strict", False)
        flat.setdefault("parameters", None)
    return flat


def _tools(value: object, body: dict[str, Any]) -> None:
    body["tools"] = [_tool(t) for t in value] if isinstance(value, list) else value


def _tool_choice(value: object, body: dict[str, Any]) -> None:
    choice = _flat(value)
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        tools = choice.get("tools")
        if isinstance(tools, list):
            # The allowed tools name tools, they define none: flattened, nothing added.
            choice = {**choice, "tools": [_flat(t) for t in tools]}
    body["tool_choice"] = choice


def _response_format(value: object, body: dict[str, Any]) -> None:
    body["text"] = {"format": _flat(value)}


# A prompt option's chat name -> how it goes into a Responses request.
RESPONSES_OPTIONS: dict[str, Callable[[object, dict[str, Any]], None]] = {
    "temperature": _same("temperature"),
    "top_p": _same("top_p"),
    "max_tokens": _max_output_tokens,
    "max_completion_tokens": _max_output_tokens,
    "reasoning_effort": _reasoning_effort,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "response_format": _response_format,
}


def check_responses_options(options: Mapping[str, object] | None, ref: str | None = None) -> None:
    """Refuse the first option (in name order) the Responses API has no name for.

    Raises:
        ClientError: ``bad_request`` naming the option (``n``, ``seed``, ``stop``, ...).
    """
    lacking = sorted(k for k in options or {} if k not in RESPONSES_OPTIONS)
    if lacking:
        raise ClientError(
            ErrorCode.BAD_REQUEST,
            f"option {lacking[0]!r} is not supported with the Responses API upstream",
            ref=ref,
        )


def responses_body(
    messages: Sequence[Mapping[str, str]],
    model: str,
    options: Mapping[str, object] | None,
    *,
    background: bool = False,
) -> dict[str, Any]:
    """The streaming ``POST /v1/responses`` body of a room's turn.

    Args:
        messages: the room's chat messages (``RoomState.messages_for``), the prompt last.
        model: the model to ask.
        options: the prompt's checked options (chat names).
        background: ask for background mode, so the response can be re-attached to.

    Raises:
        ClientError: an option the Responses API lacks (``check_responses_options``).
    """
    check_responses_options(options)
    body: dict[str, Any] = {}
    for name, value in (options or {}).items():
        RESPONSES_OPTIONS[name](value, body)
    system = [m["content"] for m in messages if m.get("role") == "system"]
    items = [
        {"role": m["role"], "content": m["content"]}
        for m in messages
        if m.get("role") in ("user", "assistant")
    ]
    body.update(model=model, input=items, stream=True)
    if system:
        body["instructions"] = "\n\n".join(system)
    if background:
        body.update(background=True, store=True)
    return body
