"""What a room may keep: its bounds (``RoomLimits``, from the config) and what things cost.

Sizes are bytes of text plus a fixed overhead per event or turn: close enough to what the
room holds in memory, and cheap to keep exact as events come and go.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import Delta, SequencedEvent, TurnStart, TurnView

# What an event or a turn costs beyond its text (its fields, the objects that hold them).
EVENT_OVERHEAD = 64


def text_size(text: str) -> int:
    """The bytes of ``text`` in UTF-8 (a lone surrogate, never stored by design, counts 1)."""
    return len(text.encode("utf-8", "replace"))


def event_size(event: SequencedEvent) -> int:
    """About what a retained event costs: its text plus a fixed overhead."""
    if isinstance(event, Delta):
        size = EVENT_OVERHEAD
        for choice in event.choices:
            for text in (choice.content, choice.reasoning, choice.refusal):
                size += 0 if text is None else text_size(text)
            for call in choice.tool_calls:
                for text in (call.id, call.name, call.arguments):
                    size += 0 if text is None else text_size(text)
        return size
    if isinstance(event, TurnStart):
        return EVENT_OVERHEAD + text_size(event.prompt) + text_size(event.model)
    return EVENT_OVERHEAD


def turn_size(view: TurnView) -> int:
    """About what a kept turn costs: its prompt and every string of its answer."""
    size = EVENT_OVERHEAD + text_size(view.prompt)
    for choice in view.choices:
        size += text_size(choice.content) + text_size(choice.reasoning)
        size += text_size(choice.refusal)
        for call in choice.tool_calls:
            size += text_size(call.id or "") + text_size(call.name or "")
            size += text_size(call.arguments)
    return size


@dataclass(frozen=True, slots=True)
class RoomLimits:
    """How much a room remembers; every bound is a config key."""

    retained_events: int = 10_000
    snapshot_turns: int = 20
    history_turns: int = 10
    # Bytes of text (0 = unlimited): what the room keeps (its log and ended turns; the
    # oldest go first, the newest turn always stays) and what goes upstream as history.
    max_bytes: int = 0
    history_bytes: int = 0

    @property
    def kept_turns(self) -> int:
        """How many ended turns a room (and its broker) keeps.

        Enough for the snapshot and for the history, and at least one.
        """
        return max(self.snapshot_turns, self.history_turns, 1)
