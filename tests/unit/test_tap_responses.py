"""The Responses tap's pure rules: request, prompt, what is relayed, the stream's end, answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.errors import ClientError
from server.core.messages import ErrorInfo, TurnStatus, TurnView
from server.core.tap_responses import ResponsesRelay, parse_responses_tap_request, prompt_of

FINAL = {"id": "resp_1", "object": "response", "status": "completed", "output": []}


def parse(body: dict[str, Any], max_prompt_chars: int = 0) -> Any:
    """Parse a tap body with the default model ``dflt``."""
    return parse_responses_tap_request(
        body, default_model="dflt", max_prompt_chars=max_prompt_chars
    )


def ev(kind: str | None, seq: int | None = None, **fields: Any) -> str:
    """An event's data: its type (when given), sequence number (when given) and fields."""
    head: dict[str, Any] = {} if kind is None else {"type": kind}
    if seq is not None:
        head["sequence_number"] = seq
    return json.dumps({**head, **fields})


def view(status: TurnStatus, error: ErrorInfo | None = None) -> TurnView:
    """A turn the runner is done with."""
    return TurnView("t1", status, "q", "m", 1.0, 2.0, (), None, error)


def test_upstream_body_streams_and_keeps_every_field_of_the_caller() -> None:
    """Model defaults, stream is forced on upstream, background and the rest pass through."""
    body = {"input": "q", "instructions": "be brief", "background": True, "store": False}
    tap = parse(body)
    assert tap.upstream_body == {**body, "model": "dflt", "stream": True}
    assert (tap.prompt, tap.model, tap.stream, tap.wants_usage) == ("q", "dflt", False, False)
    tap = parse({"input": [{"role": "user", "content": "x"}], "model": "m", "stream": True})
    assert (tap.model, tap.stream, tap.upstream_body["stream"]) == ("m", True, True)


@pytest.mark.parametrize(
    ("items", "prompt"),
    [
        ("plain", "plain"),
        ("", ""),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "b"),
        (
            [
                {"role": "user", "content": [{"type": "input_text", "text": "x"}, {"text": "y"}]},
                {"role": "assistant", "content": "no"},
            ],
            "xy",
        ),
        (
            [
                {"role": "user", "content": [{"type": "input_image", "image_url": "u"}, "z", 3]},
                {"type": "function_call_output", "call_id": "c", "output": "out"},
            ],
            "",
        ),
        ([{"type": "message", "role": "user", "content": {"text": "no"}}], ""),
        ([{"type": "item_reference", "role": "user", "id": "msg_1"}], ""),
        ([{"role": "system", "content": "s"}], ""),
    ],
)
def test_the_prompt_is_the_last_user_message_text(items: Any, prompt: str) -> None:
    """A string input, or the text parts of the last user message item, else empty."""
    assert prompt_of(items) == prompt
    assert parse({"input": items}).prompt == prompt


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "'input'"),
        ({"input": None}, "'input'"),
        ({"input": 3}, "'input'"),
        ({"input": {"role": "user"}}, "'input'"),
        ({"input": []}, "'input'"),
        ({"input": ["x"]}, "'input'"),
        ({"input": [{"role": "user", "content": "x"}, None]}, "'input'"),
        ({"input": "x", "model": 3}, "'model'"),
        ({"input": "x", "model": ""}, "'model'"),
        ({"input": "x", "stream": "yes"}, "'stream'"),
        ({"input": "x", "stream": None}, "'stream'"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(body: dict[str, Any], named: str) -> None:
    """Wrong types and empty lists: bad_request naming the field."""
    with pytest.raises(ClientError) as caught:
        parse(body)
    assert caught.value.code == "bad_request"
    assert named in caught.value.message


def test_a_prompt_over_the_limit_is_too_large() -> None:
    """The prompt, not the whole input, obeys max_prompt_chars (0: no limit)."""
    items = [{"role": "user", "content": "x" * 11}, {"role": "user", "content": "y" * 10}]
    assert parse({"input": items}, max_prompt_chars=10).prompt == "y" * 10
    assert parse({"input": "z" * 100}).prompt == "z" * 100
    with pytest.raises(ClientError) as caught:
        parse({"input": "z" * 11}, max_prompt_chars=10)
    assert caught.value.code == "too_large"


def test_events_are_relayed_as_sent_and_the_answer_is_the_terminal_response() -> None:
    """Each event's data passes unchanged; the terminal event's response is the answer."""
    relay = ResponsesRelay()
    stream = [
        ("response.created", ev("response.created", 0, response={"id": "resp_1"})),
        ("response.output_text.delta", ev("response.output_text.delta", 1, delta="hé\ud83d")),
        ("response.completed", ev("response.completed", 2, response=FINAL)),
    ]
    for name, data in stream:
        assert relay.take(name, data) == data
    assert relay.last_sequence_number == 2
    assert relay.final == FINAL
    assert relay.closing(view("completed")) is None
    assert relay.answer(view("completed")) == (200, FINAL)


def test_an_incomplete_response_is_an_answer_too() -> None:
    """response.incomplete ends a turn completed (length): its response is the answer."""
    relay = ResponsesRelay()
    final = {**FINAL, "status": "incomplete"}
    relay.take(None, ev("response.incomplete", None, response=final))
    assert relay.last_sequence_number is None
    assert relay.answer(view("completed")) == (200, final)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        (None, "not json"),  # never given: such data ends the turn unrelayed
        ("response.created", "[1, 2]"),
        (None, '"text"'),
        ("response.output_text.delta", ev(None, 0, delta="x")),  # its type from event:
        (None, ev(None, 0, delta="x")),
        (None, ev("response.in_progress", 0, response=[])),
    ],
)
def test_other_events_pass_unread(name: str | None, data: str) -> None:
    """Whatever the turn took and went on after passes as it came."""
    relay = ResponsesRelay()
    assert relay.take(name, data) == data
    assert relay.final is None


def test_replayed_events_are_not_relayed() -> None:
    """An event the turn ignored (its sequence number already passed) is not passed on."""
    relay = ResponsesRelay()
    assert relay.take(None, ev("response.output_text.delta", 5, delta="a")) is not None
    assert relay.take(None, ev("response.output_text.delta", 5, delta="a")) is None
    assert relay.take(None, ev("response.completed", 3, response=FINAL)) is None
    assert relay.take(None, ev("error", 4, code="x", message="y")) is None
    assert relay.final is None
    assert relay.last_sequence_number == 5
    assert relay.closing(view("truncated")) == (
        "error",
        json.dumps(
            {
                "type": "error",
                "code": "upstream_error",
                "message": "the upstream's answer ended before it was complete",
                "param": None,
                "sequence_number": 6,
            },
            separators=(",", ":"),
        ),
    )


SCRUBBED = ErrorInfo("server_error", "boom with [redacted]")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("error", ev("error", 7, code="server_error", message="boom with sk-secret12345")),
        (None, ev("error", 7, error={"code": "server_error", "message": "sk-secret12345"})),
        ("error", ev(None, 7, code="server_error", message="sk-secret12345", param="p")),
    ],
)
def test_an_error_event_is_held_and_ends_the_stream_with_the_rooms_error(
    name: str | None, data: str
) -> None:
    """The upstream's error event is not relayed; the stream ends with the room's error."""
    relay = ResponsesRelay()
    assert relay.take(name, data) is None
    closing = relay.closing(view("failed", SCRUBBED))
    assert closing is not None
    assert closing[0] == "error"
    assert json.loads(closing[1]) == {
        "type": "error",
        "code": "server_error",
        "message": "boom with [redacted]",
        "param": None,
        "sequence_number": 7,
    }
    assert relay.answer(view("failed", SCRUBBED)) == (
        502,
        {"error": {"code": "upstream_error", "message": "server_error: boom with [redacted]"}},
    )


def test_an_error_event_that_is_no_object_ends_with_a_numbered_error() -> None:
    """``event: error`` with data that is no object: held; the closing error is numbered next."""
    relay = ResponsesRelay()
    relay.take(None, ev("response.created", 4))
    assert relay.take("error", '"sk-secret12345"') is None
    closing = relay.closing(view("failed", ErrorInfo("upstream_error", "[redacted]")))
    assert closing is not None
    assert json.loads(closing[1])["sequence_number"] == 5
    assert "secret" not in closing[1]


@pytest.mark.parametrize(
    "response", [{**FINAL, "status": "failed", "error": {"message": "sk-secret12345"}}, None, 3]
)
def test_response_failed_is_held_and_sent_with_the_rooms_error(response: object) -> None:
    """response.failed goes to the caller last, its error replaced by the room's scrubbed one."""
    relay = ResponsesRelay()
    fields = {} if response is None else {"response": response}
    assert relay.take("response.failed", ev(None, 9, **fields)) is None
    closing = relay.closing(view("failed", SCRUBBED))
    assert closing is not None
    assert closing[0] == "response.failed"
    sent = json.loads(closing[1])
    assert sent["sequence_number"] == 9
    assert sent["response"]["error"] == {"code": "server_error", "message": "boom with [redacted]"}
    assert "secret" not in closing[1]
    if isinstance(response, dict):
        assert sent["response"]["id"] == "resp_1"


@pytest.mark.parametrize(
    ("turn", "status", "code"),
    [
        (None, 503, "unavailable"),
        (view("truncated"), 502, "upstream_error"),
        (view("cancelled"), 409, "turn_ended"),
        (view("streaming"), 503, "unavailable"),
        (view("failed", ErrorInfo("internal_error", "crash")), 500, "internal_error"),
    ],
)
def test_a_turn_that_did_not_complete_ends_with_its_failure(
    turn: TurnView | None, status: int, code: str
) -> None:
    """No failure event seen: the closing error and the answer are the tap's failure."""
    relay = ResponsesRelay()
    assert relay.take(None, ev("response.output_text.delta", None, delta="x")) is not None
    closing = relay.closing(turn)
    assert closing is not None
    event = json.loads(closing[1])
    assert (event["type"], event["code"], event["sequence_number"]) == ("error", code, 0)
    answer_status, body = relay.answer(turn)
    assert answer_status == status
    assert body["error"]["code"] == code


@pytest.mark.parametrize(
    "data",
    [ev("response.completed", 1), ev("response.completed", 1, response="no"), None],
)
def test_a_completed_turn_without_a_response_object_is_a_502(data: str | None) -> None:
    """A terminal event with no response object (or none seen): nothing to answer with."""
    relay = ResponsesRelay()
    if data is not None:
        relay.take(None, data)
    assert relay.answer(view("completed")) == (
        502,
        {
            "error": {
                "code": "upstream_error",
                "message": "the upstream's last event carried no response",
            }
        },
    )
