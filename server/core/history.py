"""A room's conversation as the chat messages of its next upstream request."""

from __future__ import annotations

from collections.abc import Iterable

from .room_limits import RoomLimits, text_size

ChatMessage = dict[str, str]


def history_messages(
    earlier: Iterable[tuple[str, str]], prompt: str, system_prompt: str, limits: RoomLimits
) -> list[ChatMessage]:
    """System prompt, history, then the prompt.

    The history is the newest of the ``earlier`` (prompt, answer) pairs, oldest first, that
    fit ``history_turns`` and, with the prompt, ``history_bytes``: older turns are left out
    first, whole.
    """
    turns = list(earlier)
    limit, budget = limits.history_turns, limits.history_bytes
    room_left = budget - text_size(prompt) if budget else None
    history: list[ChatMessage] = []
    for asked, answer in reversed(turns[-limit:] if limit > 0 else []):
        if room_left is not None:
            room_left -= text_size(asked) + text_size(answer)
            if room_left < 0:
                break
        if answer:
            history.append({"role": "assistant", "content": answer})
        history.append({"role": "user", "content": asked})
    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.extend(reversed(history))
    messages.append({"role": "user", "content": prompt})
    return messages
