"""OpenAI chat-completion chunks in, what grew out (PROTOCOL.md, "Sequenced events").

Handles the quirks of OpenAI-compatible providers: usage chunks with empty ``choices``,
Azure's filter chunks, ``reasoning_content`` (DeepSeek, vLLM) and ``reasoning``
(OpenRouter, newer vLLM, Ollama), Groq's ``x_groq.usage``, tool calls without ``index``,
providers that repeat tool-call ids and names on every chunk, and legacy ``function_call``.
What an upstream sends is repaired as it is parsed (``repair.py``), never refused. The text
itself is kept by ``choices.ChoiceStore``, shared with the Responses API feeder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .choices import Choice, ChoiceStore, ToolCall, is_index, nonempty_text
from .codes import ErrorCode
from .messages import ChoiceDelta, ErrorInfo, ToolCallDelta
from .repair import repair_text
from .scrub import scrub


def error_info(raw: object, secrets: tuple[str, ...] = ()) -> ErrorInfo:
    """An upstream error object (or anything else) as a scrubbed ErrorInfo of valid text."""
    if isinstance(raw, Mapping):
        code = raw.get("code") or raw.get("type") or ErrorCode.UPSTREAM_ERROR
        message = raw.get("message") or "the upstream reported an error"
    else:
        code, message = ErrorCode.UPSTREAM_ERROR, str(raw) or "the upstream reported an error"
    return ErrorInfo(
        code=scrub(repair_text(str(code)), secrets)[:64],
        message=scrub(repair_text(str(message)), secrets),
    )


class ChunkAccumulator(ChoiceStore):
    """Accumulates one turn's choices from parsed chunks and reports what grew."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = secrets
        self.error: ErrorInfo | None = None

    def feed(self, chunk: Mapping[str, Any]) -> tuple[ChoiceDelta, ...]:
        """Apply one chunk from ``parse``; return a delta for every choice whose strings grew."""
        if chunk.get("error") is not None:
            self.error = error_info(chunk["error"], self._secrets)
            return ()
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self.usage = dict(usage)
        groq = chunk.get("x_groq")
        if isinstance(groq, Mapping) and isinstance(groq.get("usage"), Mapping):
            self.usage = dict(groq["usage"])
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return ()
        grown: list[ChoiceDelta] = []
        for position, raw in enumerate(choices):
            if isinstance(raw, Mapping):
                delta = self._feed_choice(raw, position)
                if delta is not None:
                    grown.append(delta)
        return tuple(grown)

    def _feed_choice(self, raw: Mapping[str, Any], position: int) -> ChoiceDelta | None:
        index = raw.get("index")
        index = index if is_index(index) else position
        choice = self._choice(index)
        finish = raw.get("finish_reason")
        if isinstance(finish, str) and finish:
            choice.finish_reason = finish  # a later null never clears it
        delta = raw.get("delta")
        if not isinstance(delta, Mapping):
            return None
        content = nonempty_text(delta.get("content"))
        refusal = nonempty_text(delta.get("refusal"))
        reasoning = _reasoning(delta)
        calls = self._feed_tool_calls(choice, delta)
        if content is None and refusal is None and reasoning is None and not calls:
            return None
        if content is not None:
            choice.content.append(content)
        if refusal is not None:
            choice.refusal.append(refusal)
        if reasoning is not None:
            choice.reasoning.append(reasoning)
        return ChoiceDelta(
            index=index, content=content, reasoning=reasoning, refusal=refusal, tool_calls=calls
        )

    def _feed_tool_calls(
        self, choice: Choice, delta: Mapping[str, Any]
    ) -> tuple[ToolCallDelta, ...]:
        raw_calls = delta.get("tool_calls")
        if not isinstance(raw_calls, list):
            legacy = delta.get("function_call")
            raw_calls = [{"index": 0, "function": legacy}] if isinstance(legacy, Mapping) else []
        grown: list[ToolCallDelta] = []
        for raw in raw_calls:
            if not isinstance(raw, Mapping):
                continue
            call = self._tool_call_for(choice, raw)
            function = raw.get("function")
            function = function if isinstance(function, Mapping) else {}
            new_id = nonempty_text(raw.get("id")) if call.id is None else None
            new_name = nonempty_text(function.get("name")) if call.name is None else None
            arguments = nonempty_text(function.get("arguments"))
            if new_id is not None:
                call.id = new_id
            if new_name is not None:
                call.name = new_name
            if arguments is not None:
                call.arguments.append(arguments)
            if new_id is not None or new_name is not None or arguments is not None:
                grown.append(ToolCallDelta(call.index, new_id, new_name, arguments))
        return tuple(grown)

    @staticmethod
    def _tool_call_for(choice: Choice, raw: Mapping[str, Any]) -> ToolCall:
        """Find the call a fragment belongs to; without ``index``, match by id or take the last."""
        calls = choice.tool_calls
        index = raw.get("index")
        if not is_index(index):
            call_id = nonempty_text(raw.get("id"))
            known = [c for c in calls.values() if c.id is not None and c.id == call_id]
            if known:
                return known[0]
            if call_id is None and calls:
                return calls[max(calls)]
            index = max(calls) + 1 if calls else 0
        call = calls.get(index)
        if call is None:
            call = calls[index] = ToolCall(index)
        return call


def _reasoning(delta: Mapping[str, Any]) -> str | None:
    """``reasoning_content`` and ``reasoning`` both carry thoughts; some proxies send both."""
    first = nonempty_text(delta.get("reasoning_content"))
    second = nonempty_text(delta.get("reasoning"))
    if first is None or second is None or first == second:
        return first or second
    return first + second
