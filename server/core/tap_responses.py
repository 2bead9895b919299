"""The tap for the Responses API (PROTOCOL.md, "Tap"): the request, the relay, the answer.

``POST /v1/responses`` with ``X-Room`` is relayed as the caller sent it, except that the
upstream always streams, so the room watches live. A streaming caller gets the upstream's
events as they came, up to and including the event that ended the room's turn (the SDKs need
the terminal event: it carries the final ``Response``). A caller that did not ask to stream
gets that terminal event's ``response`` object, as the upstream would have answered.

The event that ends a turn ``failed`` (``response.failed``, or an ``error`` event) is not
relayed as the upstream wrote it: a secret it echoes would reach the caller. The caller gets
it with the turn's own scrubbed error in place of the upstream's, the error the room's viewers
see. A stream that ends otherwise without success (truncated, cancelled, the server failed)
ends with an ``error`` event of OpenAI's shape made from the turn's outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .choices import is_index
from .codec import dump_json
from .codes import ErrorCode
from .errors import ClientError
from .messages import TurnView
from .repair import load_json
from .tap import TapFailure, TapRequest, tap_failure, text_of

# The events that end a Responses stream with an answer; their ``response`` is the answer.
ANSWER_EVENTS = frozenset({"response.completed", "response.incomplete"})
# The events that end a Responses stream with a failure.
FAILURE_EVENTS = frozenset({"response.failed", "error"})


def prompt_of(items: str | list[Mapping[str, Any]]) -> str:
    """The prompt viewers see: a string input, or the text of the last user message item."""
    if isinstance(items, str):
        return items
    for item in reversed(items):
        if item.get("role") == "user" and item.get("type", "message") == "message":
            return text_of(item.get("content"))
    return ""


def parse_responses_tap_request(
    body: Mapping[str, Any], *, default_model: str, max_prompt_chars: int = 0
) -> TapRequest:
    """Validate a Responses tap body and build the upstream body (always streaming).

    The body's text and numbers were checked when it was loaded (``load_client_object``).
    Every other field (``instructions``, ``tools``, ``background``, ...) goes upstream as the
    caller sent it.

    Raises:
        ClientError: ``bad_request`` when ``input``, ``model`` or ``stream`` is not usable,
            ``too_large`` when the prompt is over ``max_prompt_chars`` (0: no limit).
    """
    items = body.get("input")
    if not isinstance(items, str) and (not isinstance(items, list) or not items):
        raise ClientError(ErrorCode.BAD_REQUEST, "'input' must be a string or a non-empty list")
    if isinstance(items, list) and not all(isinstance(item, Mapping) for item in items):
        raise ClientError(ErrorCode.BAD_REQUEST, "every item of 'input' must be an object")
    model = body.get("model", default_model)
    if not isinstance(model, str) or not model:
        raise ClientError(ErrorCode.BAD_REQUEST, "'model' must be a non-empty string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ClientError(ErrorCode.BAD_REQUEST, "'stream' must be a boolean")
    prompt = prompt_of(items)
    if max_prompt_chars and len(prompt) > max_prompt_chars:
        raise ClientError(ErrorCode.TOO_LARGE, f"the prompt is over {max_prompt_chars} characters")
    upstream = {**body, "model": model, "stream": True}
    return TapRequest(prompt, model, stream, False, upstream)


class ResponsesRelay:
    """What a Responses tap caller gets of the upstream's events, fed one at a time.

    It is given the events the room's turn took, the one that ended it last
    (``RoomState.feed_many``). It reads them as the turn does (``ResponsesAccumulator``):
    the data's ``type``, else the SSE event name; an event whose ``sequence_number`` is not
    above the highest seen was not taken by the turn, so it is not passed on either.

    Attributes:
        final: the ``response`` object of the terminal ``response.completed`` or
            ``response.incomplete`` event, once relayed.
        last_sequence_number: the highest ``sequence_number`` relayed, or None before any.
    """

    def __init__(self) -> None:
        self.final: dict[str, Any] | None = None
        self.last_sequence_number: int | None = None
        # The held event that failed the turn: its kind and its object.
        self._failure: tuple[str, dict[str, Any]] | None = None

    def take(self, name: str | None, data: str) -> str | None:
        """The ``data`` to pass on for one upstream event, or None to pass nothing now.

        A failure event is held back for ``closing``, a replayed event dropped.
        """
        try:
            event, _ = load_json(data)
        except (ValueError, RecursionError):
            return data  # the turn would have ended on it: never given, passed on unread
        if not isinstance(event, dict):
            if name == "error":
                self._failure = ("error", {})
                return None
            return data
        seq = event.get("sequence_number")
        if is_index(seq):
            if self.last_sequence_number is not None and seq <= self.last_sequence_number:
                return None
            self.last_sequence_number = seq
        kind = event.get("type")
        kind = kind if isinstance(kind, str) else name
        if kind in FAILURE_EVENTS:
            self._failure = (kind, event)
            return None
        if kind in ANSWER_EVENTS:
            response = event.get("response")
            self.final = response if isinstance(response, dict) else None
        return data

    def closing(self, turn: TurnView | None) -> tuple[str, str] | None:
        """The SSE event name and data that end a stream whose turn did not succeed.

        None after a completed turn: its terminal event was the last one relayed.
        """
        failure = tap_failure(turn)
        if failure is None:
            return None
        error = turn.error if turn is not None else None
        code, message = str(failure.code), failure.message
        if error is not None:  # the room's own error, as its viewers see it
            code, message = error.code, error.message
        kind, held = self._failure or ("error", {})
        if kind == "response.failed":
            response = held.get("response")
            response = dict(response) if isinstance(response, Mapping) else {}
            response["error"] = {"code": code, "message": message}
            return kind, dump_json({**held, "response": response}).decode()
        seq = held.get("sequence_number")
        if not is_index(seq):
            last = self.last_sequence_number
            seq = 0 if last is None else last + 1
        event = {"type": "error", "code": code, "message": message, "param": None}
        return "error", dump_json({**event, "sequence_number": seq}).decode()

    def answer(self, turn: TurnView | None) -> tuple[int, dict[str, Any]]:
        """A non-streaming caller's status and body: the final ``Response``, or the error JSON."""
        failure = tap_failure(turn)
        if failure is None and self.final is None:
            failure = TapFailure(
                502, ErrorCode.UPSTREAM_ERROR, "the upstream's last event carried no response"
            )
        if failure is not None:
            return failure.status, failure.body()
        assert self.final is not None  # checked above
        return 200, self.final
