"""Lossless merging of consecutive deltas of one turn (PROTOCOL.md, ``first_seq``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .messages import ChoiceDelta, Delta, ToolCallDelta


def _join(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    return a if b is None else a + b


def _merge_calls(
    a: tuple[ToolCallDelta, ...], b: tuple[ToolCallDelta, ...]
) -> tuple[ToolCallDelta, ...]:
    calls = {c.index: c for c in a}
    for c in b:
        prev = calls.get(c.index)
        if prev is None:
            calls[c.index] = c
        else:
            calls[c.index] = ToolCallDelta(
                index=c.index,
                id=prev.id if prev.id is not None else c.id,
                name=prev.name if prev.name is not None else c.name,
                arguments=_join(prev.arguments, c.arguments),
            )
    return tuple(calls.values())


def _merge_choice(a: ChoiceDelta, b: ChoiceDelta) -> ChoiceDelta:
    return ChoiceDelta(
        index=a.index,
        content=_join(a.content, b.content),
        reasoning=_join(a.reasoning, b.reasoning),
        refusal=_join(a.refusal, b.refusal),
        tool_calls=_merge_calls(a.tool_calls, b.tool_calls),
    )


def merge_choices(choices: Iterable[ChoiceDelta]) -> tuple[ChoiceDelta, ...]:
    """Merge the growth of several chunks into one entry per choice, in first-seen order."""
    merged: dict[int, ChoiceDelta] = {}
    for choice in choices:
        prev = merged.get(choice.index)
        merged[choice.index] = choice if prev is None else _merge_choice(prev, choice)
    return tuple(merged.values())


def merge_deltas(deltas: Sequence[Delta]) -> Delta:
    """Merge consecutive deltas ``first_seq..seq`` of one turn into one delta.

    Appending the merged delta's strings gives exactly what appending each one did.

    Raises:
        ValueError: when ``deltas`` is empty, spans turns, or has a gap in its seqs.
    """
    if not deltas:
        raise ValueError("nothing to merge")
    first = deltas[0]
    expected = first.seq
    for position, delta in enumerate(deltas):
        start = delta.seq if delta.first_seq is None else delta.first_seq
        if delta.turn != first.turn or (position > 0 and start != expected + 1):
            raise ValueError("deltas to merge must be consecutive and of one turn")
        expected = delta.seq
    choices = merge_choices(c for delta in deltas for c in delta.choices)
    start = first.seq if first.first_seq is None else first.first_seq
    last = deltas[-1].seq
    return Delta(
        seq=last,
        turn=first.turn,
        choices=choices,
        first_seq=start if start != last else None,
    )
