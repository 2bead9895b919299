"""OpenAI chat-completion chunks in, what grew out (PROTOCOL.md, "Sequenced events").

Handles the quirks of OpenAI-compatible providers: usage chunks with empty ``choices``,
Azure's filter chunks, ``reasoning_content`` (DeepSeek, vLLM) and ``reasoning``
(OpenRouter, newer vLLM, Ollama), Groq's ``x_groq.usage``, tool calls without ``index``,
providers that repeat tool-call ids and names on every chunk, and legacy ``function_call``.
What an upstream sends is repaired as it is parsed (``repair.py``), never refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .codes import ErrorCode
from .messages import ChoiceDelta, ChoiceView, ErrorInfo, ToolCallDelta, ToolCallView, Usage
from .repair import load_json, repair_text
from .scrub import scrub


class _Text:
    """An append-only string that joins its parts lazily (repeated ``+=`` is quadratic)."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[str] = []

    def append(self, piece: str) -> None:
        self._parts.append(piece)

    def value(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""


class _ToolCall:
    __slots__ = ("arguments", "id", "index", "name")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.arguments = _Text()


class _Choice:
    __slots__ = ("content", "finish_reason", "index", "reasoning", "refusal", "tool_calls")

    def __init__(self, index: int) -> None:
        self.index = index
        self.content = _Text()
        self.reasoning = _Text()
        self.refusal = _Text()
        self.tool_calls: dict[int, _ToolCall] = {}
        self.finish_reason: str | None = None


def _text(value: object) -> str | None:
    """A non-empty string, else None: empty strings and nulls never make a delta."""
    return value if isinstance(value, str) and value else None


def _index(value: object, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


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


class ChunkAccumulator:
    """Accumulates one turn's choices from parsed chunks and reports what grew."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self._choices: dict[int, _Choice] = {}
        self._secrets = secrets
        self.usage: Usage | None = None
        self.error: ErrorInfo | None = None
        self.repairs = 0  # upstream values made valid so far (repair.py)

    def parse(self, data: str) -> object:
        """One upstream ``data:`` payload as JSON, repaired; counts the repairs in ``repairs``.

        Raises:
            ValueError: ``data`` is not JSON.
            RecursionError: ``data`` nests deeper than the parser goes.
        """
        value, repairs = load_json(data)
        self.repairs += repairs
        return value

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
        index = _index(raw.get("index"), position)
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice(index)
        finish = raw.get("finish_reason")
        if isinstance(finish, str) and finish:
            choice.finish_reason = finish  # a later null never clears it
        delta = raw.get("delta")
        if not isinstance(delta, Mapping):
            return None
        content = _text(delta.get("content"))
        refusal = _text(delta.get("refusal"))
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
        self, choice: _Choice, delta: Mapping[str, Any]
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
            new_id = _text(raw.get("id")) if call.id is None else None
            new_name = _text(function.get("name")) if call.name is None else None
            arguments = _text(function.get("arguments"))
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
    def _tool_call_for(choice: _Choice, raw: Mapping[str, Any]) -> _ToolCall:
        """Find the call a fragment belongs to; without ``index``, match by id or take the last."""
        calls = choice.tool_calls
        index = raw.get("index")
        if not (isinstance(index, int) and not isinstance(index, bool) and index >= 0):
            call_id = _text(raw.get("id"))
            known = [c for c in calls.values() if c.id is not None and c.id == call_id]
            if known:
                return known[0]
            if call_id is None and calls:
                return calls[max(calls)]
            index = max(calls) + 1 if calls else 0
        call = calls.get(index)
        if call is None:
            call = calls[index] = _ToolCall(index)
        return call

    # --- replicas: another instance streamed the turn ------------------------------------

    def _choice(self, index: int) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice(index)
        return choice

    def apply(self, delta: ChoiceDelta) -> None:
        """Append what a delta carries, as the instance that read the upstream did."""
        choice = self._choice(delta.index)
        for text, piece in (
            (choice.content, delta.content),
            (choice.reasoning, delta.reasoning),
            (choice.refusal, delta.refusal),
        ):
            if piece is not None:
                text.append(piece)
        for grown in delta.tool_calls:
            call = choice.tool_calls.get(grown.index)
            if call is None:
                call = choice.tool_calls[grown.index] = _ToolCall(grown.index)
            call.id = call.id if call.id is not None else grown.id
            call.name = call.name if call.name is not None else grown.name
            if grown.arguments is not None:
                call.arguments.append(grown.arguments)

    def finish(self, index: int, reason: str | None) -> None:
        """Set a choice's finish reason (from ``turn.end``); None never clears one."""
        choice = self._choice(index)
        if reason is not None:
            choice.finish_reason = reason

    def restore(self, view: ChoiceView) -> None:
        """Take a choice as a stored turn view has it."""
        choice = self._choices[view.index] = _Choice(view.index)
        choice.content.append(view.content)
        choice.reasoning.append(view.reasoning)
        choice.refusal.append(view.refusal)
        choice.finish_reason = view.finish_reason
        for stored in view.tool_calls:
            call = choice.tool_calls[stored.index] = _ToolCall(stored.index)
            call.id, call.name = stored.id, stored.name
            call.arguments.append(stored.arguments)

    # --- results ------------------------------------------------------------------------

    def all_finished(self) -> bool:
        """True when there is at least one choice and every choice got a finish_reason."""
        return bool(self._choices) and all(
            c.finish_reason is not None for c in self._choices.values()
        )

    def finish_reasons(self) -> tuple[tuple[int, str | None], ...]:
        """Each choice's index and finish reason, in index order."""
        return tuple((i, self._choices[i].finish_reason) for i in sorted(self._choices))

    def views(self) -> tuple[ChoiceView, ...]:
        """The choices accumulated so far, in index order."""
        return tuple(_view(self._choices[i]) for i in sorted(self._choices))

    def content(self, index: int = 0) -> str:
        """The accumulated content of one choice ('' when it has none)."""
        choice = self._choices.get(index)
        return "" if choice is None else choice.content.value()


def _reasoning(delta: Mapping[str, Any]) -> str | None:
    """``reasoning_content`` and ``reasoning`` both carry thoughts; some proxies send both."""
    first = _text(delta.get("reasoning_content"))
    second = _text(delta.get("reasoning"))
    if first is None or second is None or first == second:
        return first or second
    return first + second


def _view(choice: _Choice) -> ChoiceView:
    return ChoiceView(
        index=choice.index,
        content=choice.content.value(),
        reasoning=choice.reasoning.value(),
        refusal=choice.refusal.value(),
        tool_calls=tuple(
            ToolCallView(c.index, c.id, c.name, c.arguments.value())
            for _, c in sorted(choice.tool_calls.items())
        ),
        finish_reason=choice.finish_reason,
    )
