"""OpenAI Responses API stream events in, what grew out (PROTOCOL.md, "Upstream URL").

A Responses stream (``POST /responses`` with ``stream: true``) is a series of typed events,
each a JSON object with a ``type`` and a ``sequence_number``. Viewers see the same TURN as
for Chat Completions, so the events are mapped onto one choice (index 0):

===========================================  ==============================================
event ``type``                               effect
===========================================  ==============================================
``response.output_text.delta``               ``delta`` appends to ``content``
``response.refusal.delta``                   ``delta`` appends to ``refusal``
``response.reasoning_summary_text.delta``,   ``delta`` appends to ``reasoning``
``response.reasoning_text.delta``
``response.output_item.added`` (an item of   starts a tool call: ``id`` = ``item.call_id``,
type ``function_call``)                      ``name`` = ``item.name``; a non-empty
                                             ``item.arguments`` is its first arguments
``response.function_call_arguments.delta``   ``delta`` appends to the call whose item has
                                             ``item_id`` (else ``output_index``)
``response.completed``                       ends ``completed``: ``tool_calls`` when a
                                             function call was seen, else ``stop``
``response.incomplete``                      ends ``completed``: ``content_filter`` for
                                             that reason, else ``length``
``response.failed``                          ends ``failed`` with ``response.error``
``error``                                    ends ``failed`` with its ``error`` object, or
                                             its top-level ``code`` and ``message``
anything else                                nothing; unknown types count in ``skipped``
===========================================  ==============================================

Tool calls are numbered in the order they first appear (0, 1, ...). A delta for an item no
``output_item.added`` announced starts a call of its own (id and name unknown until the item
is announced), so no arguments are lost. The ``*.done`` events repeat what the deltas carried
and are not read.

``sequence_number`` makes re-reading harmless: an event whose number is not above the highest
seen so far (``last_sequence_number``) changes nothing, so a stream re-attached with
``starting_after`` never doubles text. Events without a number are taken as they come.

The terminal event's ``response.usage`` becomes the turn's usage under the Chat Completions
names (``input_tokens`` -> ``prompt_tokens``, ``output_tokens`` -> ``completion_tokens``,
``input_tokens_details`` -> ``prompt_tokens_details``, ``output_tokens_details`` ->
``completion_tokens_details``), so every client reads one shape; other fields, such as
``total_tokens``, pass through as they came.

Every field may be missing or of the wrong type: such events are skipped, never raised on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .accumulator import error_info
from .choices import ChoiceStore, is_index, nonempty_text
from .messages import (
    ChoiceDelta,
    ErrorInfo,
    ResponsePosition,
    ToolCallDelta,
    TurnEnding,
    Usage,
)

TextField = Literal["content", "reasoning", "refusal"]

_TEXT_EVENTS: dict[str, TextField] = {
    "response.output_text.delta": "content",
    "response.refusal.delta": "refusal",
    "response.reasoning_summary_text.delta": "reasoning",
    "response.reasoning_text.delta": "reasoning",
}

# Events that carry nothing a turn shows: lifecycle news, or the whole of what deltas carried.
_NOTHING_TO_TAKE = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.queued",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.refusal.done",
        "response.function_call_arguments.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.done",
        "response.reasoning_text.done",
    }
)

# ``incomplete_details.reason`` -> finish_reason. The answer stopped before the model meant
# to, so any other reason (``max_messages``, a new one, or none) reads as ``length``: the
# chat finish reason for an answer cut short.
_INCOMPLETE_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}

_USAGE_NAMES = {
    "input_tokens": "prompt_tokens",
    "output_tokens": "completion_tokens",
    "input_tokens_details": "prompt_tokens_details",
    "output_tokens_details": "completion_tokens_details",
}


class ResponsesAccumulator(ChoiceStore):
    """Accumulates one turn from Responses API events and reports what grew.

    The room reads it as it reads a ``ChunkAccumulator``; what it adds:

    Attributes:
        ending: set by the event that ended the turn (``response.completed``,
            ``response.incomplete``, ``response.failed``, ``error``); later events change
            nothing. None while the stream goes on: a body that ends without one is
            ``truncated``, since no choice got a finish reason.
        response_id: the upstream response's ``id``, from any event carrying ``response.id``.
        last_sequence_number: the highest ``sequence_number`` taken (``starting_after`` for a
            re-attach), or None before any.
        skipped: events not taken because their type is unknown or their fields unusable.
        replayed: events not taken because their ``sequence_number`` was already passed.
    """

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = secrets
        self.error: ErrorInfo | None = None
        self.ending: TurnEnding | None = None
        self.response_id: str | None = None
        self.last_sequence_number: int | None = None
        self.skipped = 0
        self.replayed = 0
        # A function-call item's tool-call index, by its item id and by its output position.
        self._by_item: dict[str, int] = {}
        self._by_output: dict[int, int] = {}
        self._call_count = 0

    def position(self, turn: str) -> ResponsePosition | None:
        """Where the stream has been read to, once its response id and a number are known."""
        if self.response_id is None or self.last_sequence_number is None:
            return None
        return ResponsePosition(
            turn,
            self.response_id,
            self.last_sequence_number,
            dict(self._by_item),
            dict(self._by_output),
        )

    def resume_at(self, position: ResponsePosition) -> None:
        """Go on reading the same response from ``position`` (another instance's)."""
        self.response_id = position.response_id
        self.last_sequence_number = position.after
        self._by_item.update(position.items)
        self._by_output.update(position.outputs)
        choice = self._choices.get(0)
        known = (
            *self._by_item.values(),
            *self._by_output.values(),
            *(() if choice is None else choice.tool_calls),
        )
        self._call_count = max(known, default=-1) + 1

    def feed(self, event: object, name: str | None = None) -> tuple[ChoiceDelta, ...]:
        """Apply one parsed event; return the deltas of what grew (at most one).

        Args:
            event: the event's JSON value, from ``parse``; anything but an object is skipped
                (ends the turn ``failed`` when ``name`` is ``error``).
            name: the SSE ``event:`` name, used when the data has no string ``type``.
        """
        if self.ending is not None:
            return ()
        if not isinstance(event, Mapping):
            if name == "error":
                self._fail(error_info(event, self._secrets))
            else:
                self.skipped += 1
            return ()
        seq = event.get("sequence_number")
        if is_index(seq):
            if self.last_sequence_number is not None and seq <= self.last_sequence_number:
                self.replayed += 1
                return ()
            self.last_sequence_number = seq
        kind = event.get("type")
        kind = kind if isinstance(kind, str) else name
        response = event.get("response")
        response = response if isinstance(response, Mapping) else {}
        response_id = nonempty_text(response.get("id"))
        if response_id is not None:
            self.response_id = response_id
        if kind in _TEXT_EVENTS:
            return self._text(_TEXT_EVENTS[kind], event.get("delta"))
        if kind == "response.output_item.added":
            return self._item_added(event)
        if kind == "response.function_call_arguments.delta":
            return self._arguments(event)
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self._end(kind, response)
        elif kind == "error":
            nested = event.get("error")
            if not isinstance(nested, Mapping):  # the usual shape: code and message on top
                nested = {"code": event.get("code"), "message": event.get("message")}
            self._fail(error_info(nested, self._secrets))
        elif kind not in _NOTHING_TO_TAKE:
            self.skipped += 1
        return ()

    # --- growth -------------------------------------------------------------------------

    def _grow(self, delta: ChoiceDelta) -> tuple[ChoiceDelta, ...]:
        """Store a delta exactly as a replica applies it, so both rebuild the same text."""
        self.apply(delta)
        return (delta,)

    def _text(self, field: TextField, raw: object) -> tuple[ChoiceDelta, ...]:
        if not isinstance(raw, str):
            self.skipped += 1
            return ()
        if not raw:
            return ()
        if field == "content":
            return self._grow(ChoiceDelta(0, content=raw))
        if field == "refusal":
            return self._grow(ChoiceDelta(0, refusal=raw))
        return self._grow(ChoiceDelta(0, reasoning=raw))

    def _item_added(self, event: Mapping[str, Any]) -> tuple[ChoiceDelta, ...]:
        item = event.get("item")
        if not isinstance(item, Mapping):
            self.skipped += 1
            return ()
        if item.get("type") != "function_call":
            return ()  # messages and reasoning items: their text comes as deltas
        item_id = nonempty_text(item.get("id"))
        output = event.get("output_index")
        output = output if is_index(output) else None
        # The item's id names it; its position counts only for an item without one.
        index = self._by_item.get(item_id) if item_id is not None else None
        if index is None and item_id is None and output is not None:
            index = self._by_output.get(output)
        index = self._register(index, item_id, output)
        return self._grow_call(
            index,
            nonempty_text(item.get("call_id")),
            nonempty_text(item.get("name")),
            nonempty_text(item.get("arguments")),
        )

    def _arguments(self, event: Mapping[str, Any]) -> tuple[ChoiceDelta, ...]:
        raw = event.get("delta")
        if not isinstance(raw, str):
            self.skipped += 1
            return ()
        item_id = nonempty_text(event.get("item_id"))
        output = event.get("output_index")
        output = output if is_index(output) else None
        index = None if item_id is None else self._by_item.get(item_id)
        if index is None and output is not None:
            index = self._by_output.get(output)
        if index is None and item_id is None and output is None and self._call_count:
            index = self._call_count - 1  # nothing names the call: the newest one
        index = self._register(index, item_id, output)
        return self._grow_call(index, None, None, raw or None)

    def _register(self, index: int | None, item_id: str | None, output: int | None) -> int:
        """The call's index (a new one when None), now found by its item id and position."""
        if index is None:
            index = self._call_count
            self._call_count += 1
        if item_id is not None:
            self._by_item[item_id] = index
        if output is not None:
            self._by_output[output] = index
        return index

    def _grow_call(
        self, index: int, call_id: str | None, name: str | None, arguments: str | None
    ) -> tuple[ChoiceDelta, ...]:
        """A delta of what grows in one call: ``id`` and ``name`` only when still unset."""
        choice = self._choices.get(0)
        known = None if choice is None else choice.tool_calls.get(index)
        if known is not None:
            call_id = call_id if known.id is None else None
            name = name if known.name is None else None
        if call_id is None and name is None and arguments is None:
            return ()
        return self._grow(
            ChoiceDelta(0, tool_calls=(ToolCallDelta(index, call_id, name, arguments),))
        )

    # --- the end ------------------------------------------------------------------------

    def _end(self, kind: str, response: Mapping[str, Any]) -> None:
        usage = response.get("usage")
        if isinstance(usage, Mapping):
            self.usage = chat_usage(usage)
        if kind == "response.failed":
            error = response.get("error")
            self._fail(error_info(error if isinstance(error, Mapping) else {}, self._secrets))
            return
        if kind == "response.completed":
            calls = self._call_count > 0 or _has_function_call(response.get("output"))
            reason = "tool_calls" if calls else "stop"
        else:
            details = response.get("incomplete_details")
            why = details.get("reason") if isinstance(details, Mapping) else None
            reason = _INCOMPLETE_FINISH.get(why, "length") if isinstance(why, str) else "length"
        self.finish(0, reason)
        self.ending = TurnEnding("completed")

    def _fail(self, error: ErrorInfo) -> None:
        self.error = error
        self.ending = TurnEnding("failed", error)


def chat_usage(usage: Mapping[str, Any]) -> Usage:
    """A Responses ``usage`` object under the Chat Completions names (see the module doc)."""
    out = {key: value for key, value in usage.items() if key not in _USAGE_NAMES}
    for key, chat_name in _USAGE_NAMES.items():
        if key in usage:
            out[chat_name] = usage[key]
    return out


def _has_function_call(output: object) -> bool:
    """Whether a response's ``output`` list holds a function-call item."""
    return isinstance(output, list) and any(
        isinstance(item, Mapping) and item.get("type") == "function_call" for item in output
    )
