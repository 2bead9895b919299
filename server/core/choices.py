"""A turn's answer as it grows: its choices, their tool calls, and the usage reported.

``ChoiceStore`` is what every upstream feeder fills (``accumulator.py`` for Chat Completions
chunks, ``responses_stream.py`` for Responses API events) and what a room reads, restores
and applies replicated deltas to, so one turn looks the same whichever API answered it.
"""

from __future__ import annotations

from typing import TypeGuard

from .messages import ChoiceDelta, ChoiceView, ToolCallView, Usage
from .repair import load_json


class Text:
    """An append-only string that joins its parts lazily (repeated ``+=`` is quadratic)."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[str] = []

    def append(self, piece: str) -> None:
        """Add ``piece`` at the end."""
        self._parts.append(piece)

    def value(self) -> str:
        """The whole text so far."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""


class ToolCall:
    """One tool call of a choice: ``id`` and ``name`` are set once, ``arguments`` grows."""

    __slots__ = ("arguments", "id", "index", "name")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.arguments = Text()


class Choice:
    """One choice: its three texts, its tool calls by index, and its finish reason."""

    __slots__ = ("content", "finish_reason", "index", "reasoning", "refusal", "tool_calls")

    def __init__(self, index: int) -> None:
        self.index = index
        self.content = Text()
        self.reasoning = Text()
        self.refusal = Text()
        self.tool_calls: dict[int, ToolCall] = {}
        self.finish_reason: str | None = None


def nonempty_text(value: object) -> str | None:
    """A non-empty string, else None: empty strings and nulls never make a delta."""
    return value if isinstance(value, str) and value else None


def is_index(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a JSON integer >= 0 (``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class ChoiceStore:
    """The choices, tool calls and usage of one turn, filled by a feeder or by replicas."""

    def __init__(self) -> None:
        self._choices: dict[int, Choice] = {}
        self.usage: Usage | None = None
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

    def _choice(self, index: int) -> Choice:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = Choice(index)
        return choice

    # --- replicas: another instance streamed the turn ------------------------------------

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
                call = choice.tool_calls[grown.index] = ToolCall(grown.index)
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
        choice = self._choices[view.index] = Choice(view.index)
        choice.content.append(view.content)
        choice.reasoning.append(view.reasoning)
        choice.refusal.append(view.refusal)
        choice.finish_reason = view.finish_reason
        for stored in view.tool_calls:
            call = choice.tool_calls[stored.index] = ToolCall(stored.index)
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


def _view(choice: Choice) -> ChoiceView:
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
