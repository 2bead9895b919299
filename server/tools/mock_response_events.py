"""The events of one Responses API response, built token by token (no I/O).

A ``ResponseEvents`` takes the steps of a response in (its opening, each token of a
``ChoicePlan``, its end) and hands back the server-sent events for them, already encoded,
one frame per event, numbered by ``sequence_number`` from 0. It keeps the ``Response``
object as it stands, so a retrieval mid-stream sees the text so far.

The events follow OpenAI's streaming reference: ``response.created`` (then
``response.queued`` in background mode) and ``response.in_progress``; per output item
``response.output_item.added``, its part's ``added`` event, the deltas, the part's ``done``
events and ``response.output_item.done``; then ``response.completed`` or
``response.incomplete``. A failure is an ``error`` event followed by ``response.failed``:
OpenAI documents both events without saying that one failure sends both, and clients
watch for either, so the mock sends the two. A cancelled response gets no event: there is
no such type among the streaming events; its stream simply ends.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

from server.tools.mock_responses_request import ResponsesRequest
from server.tools.mock_scenarios import CREATED, Field

Status = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
TERMINAL: frozenset[Status] = frozenset({"completed", "incomplete", "failed", "cancelled"})

# Where each kind of token goes: the type of output item, and the type of its part.
_ITEM_OF: dict[Field, str] = {
    "reasoning_content": "reasoning",
    "content": "message",
    "refusal": "message",
    "arguments": "function_call",
}
_PART_OF: dict[Field, str] = {
    "reasoning_content": "summary_text",
    "content": "output_text",
    "refusal": "refusal",
    "arguments": "",
}
_ID_PREFIX = {"reasoning": "rs", "message": "msg", "function_call": "fc"}


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event named after the payload's ``type``, carrying it as JSON."""
    # Raw UTF-8 rather than \\u escapes, so clients really get multi-byte sequences.
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {payload['type']}\ndata: {text}\n\n".encode()


class ResponseEvents:
    """Builds the events of one response and keeps its ``Response`` object current."""

    def __init__(
        self, response_id: str, request: ResponsesRequest, tool_name: str | None, call_id: str
    ) -> None:
        self._response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": CREATED,
            "status": "queued" if request.background else "in_progress",
            "background": request.background,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": request.model,
            "output": [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": request.reasoning_effort, "summary": None},
            "store": request.store,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": list(request.tools),
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "user": None,
            "metadata": {},
        }
        self._input_tokens = request.input_tokens
        self._tool_name = tool_name
        self._call_id = call_id
        self._sequence = 0
        self._item: dict[str, Any] | None = None
        self._field: Field | None = None
        self._output_tokens = 0
        self._reasoning_tokens = 0

    @property
    def id(self) -> str:
        """The response's id."""
        return str(self._response["id"])

    @property
    def status(self) -> Status:
        """The response's status."""
        status: Status = self._response["status"]
        return status

    @property
    def sent(self) -> int:
        """How many events have been built (the next one's ``sequence_number``)."""
        return self._sequence

    def snapshot(self) -> dict[str, Any]:
        """A copy of the ``Response`` object as it stands."""
        return copy.deepcopy(self._response)

    def opening(self) -> list[bytes]:
        """``response.created``, and ``response.queued`` when the response is queued."""
        out = [self._event("response.created", response=self.snapshot())]
        if self.status == "queued":
            out.append(self._event("response.queued", response=self.snapshot()))
        return out

    def start(self) -> list[bytes]:
        """``response.in_progress``: the model has begun."""
        self._response["status"] = "in_progress"
        return [self._event("response.in_progress", response=self.snapshot())]

    def token(self, field: Field, text: str) -> list[bytes]:
        """The events for one token: its item's opening events if it starts one, its delta."""
        out = []
        if self._field is None or _ITEM_OF[self._field] != _ITEM_OF[field]:
            out += self._close_item("completed")
            out += self._open_item(field)
        self._field = field
        self._output_tokens += 1
        if field == "reasoning_content":
            self._reasoning_tokens += 1
        out.append(self._delta(field, text))
        return out

    def finish(self, finish_reason: str) -> list[bytes]:
        """Close the last item and end with ``response.completed`` or ``response.incomplete``.

        ``finish_reason`` is the plan's: ``length`` (a token limit cut the answer) makes
        the response incomplete, with ``max_output_tokens`` as the reason.
        """
        cut = finish_reason == "length"
        out = self._close_item("incomplete" if cut else "completed")
        self._settle("incomplete" if cut else "completed")
        if cut:
            self._response["incomplete_details"] = {"reason": "max_output_tokens"}
            out.append(self._event("response.incomplete", response=self.snapshot()))
        else:
            out.append(self._event("response.completed", response=self.snapshot()))
        return out

    def fail(self, message: str) -> list[bytes]:
        """An ``error`` event, then ``response.failed``; open items stay as they stood."""
        out = [self._event("error", code="server_error", message=message, param=None)]
        self._settle("failed")
        self._response["error"] = {"code": "server_error", "message": message}
        out.append(self._event("response.failed", response=self.snapshot()))
        return out

    def cancel(self) -> None:
        """Mark the response cancelled (no event: the API has no streaming event for it)."""
        self._response["status"] = "cancelled"

    def _settle(self, status: Status) -> None:
        """Set a terminal status, with the time and usage."""
        self._response["status"] = status
        self._response["completed_at"] = CREATED
        self._response["usage"] = {
            "input_tokens": self._input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self._output_tokens,
            "output_tokens_details": {"reasoning_tokens": self._reasoning_tokens},
            "total_tokens": self._input_tokens + self._output_tokens,
        }

    def _event(self, kind: str, **fields: Any) -> bytes:
        """Encode one event, numbering it."""
        frame = sse_event({"type": kind, **fields, "sequence_number": self._sequence})
        self._sequence += 1
        return frame

    def _where(self) -> dict[str, Any]:
        """The fields that place an event in the current item."""
        assert self._item is not None
        return {"item_id": self._item["id"], "output_index": len(self._response["output"]) - 1}

    def _open_item(self, field: Field) -> list[bytes]:
        """Add the output item for ``field``'s tokens, and its (empty) part."""
        kind = _ITEM_OF[field]
        output: list[dict[str, Any]] = self._response["output"]
        item_id = f"{_ID_PREFIX[kind]}_{self.id.removeprefix('resp_')}_{len(output)}"
        item: dict[str, Any]
        if kind == "reasoning":
            item = {"id": item_id, "type": "reasoning", "summary": []}
        elif kind == "message":
            item = {
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        else:
            item = {
                "id": item_id,
                "type": "function_call",
                "status": "in_progress",
                "call_id": self._call_id,
                "name": self._tool_name,
                "arguments": "",
            }
        output.append(item)
        self._item = item
        out = [self._event("response.output_item.added", output_index=len(output) - 1, item=item)]
        part_type = _PART_OF[field]
        part: dict[str, Any]
        if kind == "reasoning":
            part = {"type": part_type, "text": ""}
            item["summary"].append(part)
            out.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    **self._where(),
                    summary_index=0,
                    part=part,
                )
            )
        elif kind == "message":
            part = (
                {"type": part_type, "text": "", "annotations": [], "logprobs": []}
                if part_type == "output_text"
                else {"type": part_type, "refusal": ""}
            )
            item["content"].append(part)
            out.append(
                self._event(
                    "response.content_part.added", **self._where(), content_index=0, part=part
                )
            )
        return out

    def _delta(self, field: Field, text: str) -> bytes:
        """The delta event of one token, which also grows the item in the snapshot."""
        item = self._item
        assert item is not None
        extra: dict[str, Any]
        if field == "reasoning_content":
            item["summary"][0]["text"] += text
            kind, extra = "response.reasoning_summary_text.delta", {"summary_index": 0}
        elif field == "arguments":
            item["arguments"] += text
            kind, extra = "response.function_call_arguments.delta", {}
        elif field == "refusal":
            item["content"][0]["refusal"] += text
            kind, extra = "response.refusal.delta", {"content_index": 0}
        else:
            item["content"][0]["text"] += text
            kind, extra = "response.output_text.delta", {"content_index": 0, "logprobs": []}
        return self._event(kind, **self._where(), **extra, delta=text)

    def _close_item(self, status: Literal["completed", "incomplete"]) -> list[bytes]:
        """The ``done`` events of the open item, if there is one."""
        item, field = self._item, self._field
        if item is None or field is None:
            return []
        where = self._where()
        out = []
        if field == "reasoning_content":
            part = item["summary"][0]
            summary = {**where, "summary_index": 0}
            out.append(
                self._event("response.reasoning_summary_text.done", **summary, text=part["text"])
            )
            out.append(self._event("response.reasoning_summary_part.done", **summary, part=part))
        elif field == "arguments":
            out.append(
                self._event(
                    "response.function_call_arguments.done", **where, arguments=item["arguments"]
                )
            )
        else:
            part = item["content"][0]
            if field == "refusal":
                done = self._event(
                    "response.refusal.done", **where, content_index=0, refusal=part["refusal"]
                )
            else:
                done = self._event(
                    "response.output_text.done",
                    **where,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
            out.append(done)
            out.append(
                self._event("response.content_part.done", **where, content_index=0, part=part)
            )
        if item["type"] != "reasoning":
            item["status"] = status
        out.append(
            self._event("response.output_item.done", output_index=where["output_index"], item=item)
        )
        self._item = self._field = None
        return out
