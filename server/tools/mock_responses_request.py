"""What the mock reads from a Responses API body (``POST /v1/responses``).

The answer derives from ``input`` the way a chat answer derives from ``messages``: the text
of the last user message (a plain string ``input`` is one), so ``answer_text`` gives the
expected text for either API. ``instructions`` count towards the input tokens like a system
message does in chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.tools.mock_scenarios import DEFAULT_MODEL, last_user_text, positive_int, prompt_tokens

_ROLES = ("user", "assistant", "system", "developer")


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """The parts of a Responses body the mock acts on (and echoes back in the Response)."""

    model: str
    prompt: str
    input_tokens: int
    instructions: str | None
    max_output_tokens: int | None
    stream: bool
    background: bool
    store: bool
    reasoning_effort: str | None
    tools: tuple[dict[str, Any], ...]
    tool_name: str | None


def input_messages(value: object) -> list[dict[str, Any]]:
    """The messages of an ``input``: a string is one user message; ValueError if malformed.

    Items that are not messages (tool call outputs, reasoning, ...) are accepted and skipped:
    they carry no text for the answer.
    """
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise ValueError("'input' must be a string or a non-empty array of input items.")
    messages = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"Invalid type for 'input[{i}]': expected an object.")
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise ValueError(f"Invalid type for 'input[{i}].type': expected a string.")
        if kind != "message":
            continue
        if item.get("role") not in _ROLES:
            raise ValueError(
                f"Invalid value for 'input[{i}].role': expected one of "
                "'user', 'assistant', 'system' or 'developer'."
            )
        content = item.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content):
                raise ValueError(
                    f"Every part of 'input[{i}].content' must be an object with a string 'type'."
                )
        elif not isinstance(content, str):
            raise ValueError(
                f"Invalid type for 'input[{i}].content': expected a string or an array."
            )
        messages.append({"role": item["role"], "content": content})
    return messages


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    """``body[name]`` if it is a boolean, ``default`` if absent or null; ValueError otherwise."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValueError(f"Invalid type for '{name}': expected a boolean.")
    return value


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    """``body[name]`` if it is a string or absent (None); ValueError otherwise."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"Invalid type for '{name}': expected a string.")
    return value


def _reasoning_effort(body: dict[str, Any]) -> str | None:
    """The ``reasoning.effort`` of the body, if it asks for one."""
    reasoning = body.get("reasoning")
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise ValueError("Invalid type for 'reasoning': expected an object.")
    return _optional_str(reasoning, "effort")


def _tools(body: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The body's tools, each an object."""
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise ValueError("Invalid type for 'tools': expected an array of objects.")
    return tuple(tools)


def _first_function_name(tools: tuple[dict[str, Any], ...]) -> str | None:
    """The name of the first function tool; Responses tools are flat, unlike chat's."""
    for tool in tools:
        if tool.get("type") == "function" and isinstance(tool.get("name"), str):
            return str(tool["name"])
    return None


def parse_responses_request(body: object) -> ResponsesRequest:
    """Validate a Responses body; ValueError carries the message for a 400."""
    if not isinstance(body, dict):
        raise ValueError("The request body must be a JSON object.")
    if "input" not in body:
        raise ValueError("Missing required parameter: 'input'.")
    messages = input_messages(body["input"])
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str):
        raise ValueError("Invalid type for 'model': expected a string.")
    instructions = _optional_str(body, "instructions")
    background = _flag(body, "background", False)
    # Like OpenAI, store defaults to true, and background mode needs a stored response.
    store = _flag(body, "store", True)
    if background and not store:
        raise ValueError("Background mode requires 'store' to be true.")
    tools = _tools(body)
    counted = messages
    if instructions:
        counted = [{"role": "system", "content": instructions}, *messages]
    return ResponsesRequest(
        model=model,
        prompt=last_user_text(messages),
        input_tokens=prompt_tokens(counted),
        instructions=instructions,
        max_output_tokens=positive_int(body, "max_output_tokens"),
        stream=_flag(body, "stream", False),
        background=background,
        store=store,
        reasoning_effort=_reasoning_effort(body),
        tools=tools,
        tool_name=_first_function_name(tools),
    )
