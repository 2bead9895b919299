"""The OpenAI-compatible tap (PROTOCOL.md, "Tap"): what goes upstream, what goes back.

A tap request is a standard chat-completions request with ``X-Room``. The server always
streams from the upstream (so the room watches live) and answers the caller as the upstream
would have: relayed SSE when the caller asked to stream, one ``chat.completion`` otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .codes import ErrorCode
from .errors import ClientError
from .messages import TurnView


@dataclass(frozen=True, slots=True)
class TapRequest:
    """A validated tap request and the body to send upstream."""

    prompt: str
    model: str
    stream: bool
    wants_usage: bool
    upstream_body: dict[str, Any]


def text_of(content: object) -> str:
    """A message's text: a string, or the text parts of a content list joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def parse_tap_request(
    body: Mapping[str, Any], *, default_model: str, include_usage: bool, max_prompt_chars: int = 0
) -> TapRequest:
    """Validate a tap body and build the upstream body (always streaming).

    The body's text and numbers were checked when it was loaded (``load_client_object``).

    Raises:
        ClientError: ``bad_request`` when ``messages`` or ``model`` is not usable, ``too_large``
            when the prompt (the last user message) is over ``max_prompt_chars`` (0: no limit).
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ClientError(ErrorCode.BAD_REQUEST, "'messages' must be a non-empty list")
    if not all(isinstance(m, Mapping) for m in messages):
        raise ClientError(ErrorCode.BAD_REQUEST, "every message must be an object")
    model = body.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise ClientError(ErrorCode.BAD_REQUEST, "'model' must be a non-empty string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ClientError(ErrorCode.BAD_REQUEST, "'stream' must be a boolean")
    options = body.get("stream_options")
    options = dict(options) if isinstance(options, Mapping) else {}
    wants_usage = stream and options.get("include_usage") is True
    if include_usage:
        options["include_usage"] = True
    upstream = {k: v for k, v in body.items() if k != "stream_options"}
    upstream.update(model=model, stream=True)
    if options:
        upstream["stream_options"] = options
    users = [m for m in messages if m.get("role") == "user"]
    prompt = text_of(users[-1].get("content")) if users else ""
    if max_prompt_chars and len(prompt) > max_prompt_chars:
        raise ClientError(ErrorCode.TOO_LARGE, f"the prompt is over {max_prompt_chars} characters")
    return TapRequest(prompt, model, stream, wants_usage, upstream)


@dataclass(frozen=True, slots=True)
class TapFailure:
    """How the tap tells its caller that the turn did not complete."""

    status: int
    code: ErrorCode
    message: str

    def body(self) -> dict[str, Any]:
        """The error JSON of PROTOCOL.md: the response body, or one SSE ``data:`` line."""
        return {"error": {"code": self.code, "message": self.message}}


def tap_failure(turn: TurnView | None) -> TapFailure | None:
    """The failure to report for a turn the runner is done with; None when it completed.

    Upstream HTTP errors never get here: the tap passes those on with the upstream's status.
    """
    if turn is None:
        return TapFailure(
            503, ErrorCode.UNAVAILABLE, "the turn was forgotten before it could be answered"
        )
    if turn.status == "completed":
        return None
    if turn.status == "truncated":
        return TapFailure(
            502, ErrorCode.UPSTREAM_ERROR, "the upstream's answer ended before it was complete"
        )
    if turn.status == "cancelled":
        return TapFailure(409, ErrorCode.TURN_ENDED, "the turn was cancelled before it completed")
    if turn.status == "streaming":
        return TapFailure(
            503, ErrorCode.UNAVAILABLE, "the turn went on elsewhere and could not be answered"
        )
    error = turn.error
    if error is not None and error.code == ErrorCode.INTERNAL_ERROR:
        return TapFailure(500, ErrorCode.INTERNAL_ERROR, error.message)
    message = "the upstream failed" if error is None else f"{error.code}: {error.message}"
    return TapFailure(502, ErrorCode.UPSTREAM_ERROR, message)


def relay_data(data: str, *, wants_usage: bool) -> str | None:
    """The SSE ``data`` to pass to the caller, or None to drop it.

    The server asks for usage for the room's sake; a caller that did not ask does not get
    the usage chunk, nor the ``usage: null`` that include_usage adds to every other chunk.
    """
    if wants_usage or data.strip() == "[DONE]":
        return data
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(chunk, dict) or "usage" not in chunk:
        return data
    if chunk["usage"] is not None and not chunk.get("choices"):
        return None
    del chunk["usage"]
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))


def completion_object(
    turn: TurnView, *, completion_id: str, created: int, wants_usage: bool = True
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` built from the accumulated turn."""
    choices = []
    for choice in turn.choices:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": choice.content or (None if choice.tool_calls else ""),
            "refusal": choice.refusal or None,
        }
        if choice.reasoning:
            message["reasoning_content"] = choice.reasoning
        if choice.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in choice.tool_calls
            ]
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
        )
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": turn.model,
        "choices": choices,
    }
    if wants_usage and turn.usage is not None:
        out["usage"] = dict(turn.usage)
    return out
