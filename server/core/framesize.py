"""The byte size of encoded delta frames, worked out from their structure (no encoding).

A delta frame is its structure (braces, keys, seqs, the turn id) plus its *text*: the
strings that grew, as they appear in the frame (JSON escapes and UTF-8 included). A delta
that merges ``first_seq..seq`` is one structure plus every part's text, so the outbox can
keep a merged run's size exact without merging or encoding it (``codec.to_wire`` is the
layout this mirrors; a unit test holds the two together).
"""

from __future__ import annotations

from .messages import ChoiceDelta, Delta

DELTA_BASE = len('{"type":"delta","seq":,"turn":"","choices":[]}')
FIRST_SEQ_FIELD = len(',"first_seq":')
INDEX_OBJECT = len('{"index":}')
TOOL_CALLS_FIELD = len(',"tool_calls":[]')
STRING_FIELD = len(',"":""')  # around a string field's name and its value


def digits(n: int) -> int:
    """Characters of an integer in JSON."""
    return 1 if 0 <= n < 10 else len(str(n))


def _choice_structure(choice: ChoiceDelta) -> int:
    size = INDEX_OBJECT + digits(choice.index)
    if choice.content is not None:
        size += STRING_FIELD + len("content")
    if choice.reasoning is not None:
        size += STRING_FIELD + len("reasoning")
    if choice.refusal is not None:
        size += STRING_FIELD + len("refusal")
    calls = choice.tool_calls
    if calls:
        size += TOOL_CALLS_FIELD + len(calls) - 1
        for call in calls:
            size += INDEX_OBJECT + digits(call.index)
            if call.id is not None:
                size += STRING_FIELD + len("id")
            if call.name is not None:
                size += STRING_FIELD + len("name")
            if call.arguments is not None:
                size += STRING_FIELD + len("arguments")
    return size


def delta_structure(delta: Delta) -> int:
    """Bytes of ``delta``'s encoded frame that are not its text.

    The turn id counts as its UTF-8 length: the server makes ids that need no JSON escape.
    """
    turn = delta.turn
    size = DELTA_BASE + digits(delta.seq) + (len(turn) if turn.isascii() else len(turn.encode()))
    if delta.first_seq is not None and delta.first_seq != delta.seq:
        size += FIRST_SEQ_FIELD + digits(delta.first_seq)
    choices = delta.choices
    if choices:
        size += len(choices) - 1
        for choice in choices:
            size += _choice_structure(choice)
    return size


def text_bytes(delta: Delta, data: bytes) -> int:
    """Bytes of ``delta``'s text in its encoded frame ``data``."""
    return len(data) - delta_structure(delta)
