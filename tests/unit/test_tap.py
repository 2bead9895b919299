"""The tap's pure rules: upstream body, prompt, relayed chunks, the non-streaming answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.errors import ClientError
from server.core.messages import ChoiceView, ErrorInfo, ToolCallView, TurnView
from server.core.tap import (
    completion_object,
    parse_tap_request,
    relay_data,
    tap_failure,
)


def _parse(body: dict[str, Any], include_usage: bool = True) -> Any:
    return parse_tap_request(body, default_model="dflt", include_usage=include_usage)


def test_upstream_body_always_streams_and_asks_for_usage() -> None:
    """The upstream body streams, keeps the caller's fields and adds include_usage."""
    tap = _parse(
        {
            "messages": [{"role": "user", "content": "q"}],
            "temperature": 0.1,
            "stream_options": {"other": 1},
        }
    )
    assert tap.upstream_body == {
        "messages": [{"role": "user", "content": "q"}],
        "temperature": 0.1,
        "model": "dflt",
        "stream": True,
        "stream_options": {"other": 1, "include_usage": True},
    }
    assert (tap.model, tap.stream, tap.wants_usage, tap.prompt) == ("dflt", False, False, "q")


@pytest.mark.parametrize(
    ("body", "include_usage", "wants_usage", "options"),
    [
        (
            {"stream": True, "stream_options": {"include_usage": True}},
            False,
            True,
            {"include_usage": True},
        ),
        ({"stream": True}, False, False, None),
        (
            {"stream": False, "stream_options": {"include_usage": True}},
            True,
            False,
            {"include_usage": True},
        ),
    ],
)
def test_usage_is_relayed_only_to_streaming_callers_that_asked(
    body: dict[str, Any], include_usage: bool, wants_usage: bool, options: object
) -> None:
    """wants_usage follows the caller's own stream_options; the server's setting does not."""
    tap = _parse({"messages": [{"role": "user", "content": "q"}], **body}, include_usage)
    assert tap.wants_usage is wants_usage
    assert tap.upstream_body.get("stream_options") == options


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([{"role": "system", "content": "s"}], ""),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "c"},
                        {"type": "image_url"},
                        "junk",
                        {"type": "text", "text": "d"},
                    ],
                },
            ],
            "cd",
        ),
        ([{"role": "user", "content": None}], ""),
    ],
)
def test_the_prompt_is_the_last_user_message(messages: list[Any], prompt: str) -> None:
    """The turn's prompt is the last user message's text (parts joined), or empty."""
    assert _parse({"messages": messages}).prompt == prompt


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": "hi"},
        {"messages": ["hi"]},
        {"messages": [{"role": "user", "content": "x"}], "model": ""},
        {"messages": [{"role": "user", "content": "x"}], "stream": 1},
    ],
)
def test_bad_tap_bodies(body: dict[str, Any]) -> None:
    """Missing or empty messages, non-object messages, bad model or stream: bad_request."""
    with pytest.raises(ClientError) as caught:
        _parse(body)
    assert caught.value.code == "bad_request"


USAGE_CHUNK = '{"choices":[],"usage":{"total_tokens":3}}'


@pytest.mark.parametrize(
    ("data", "wants_usage", "expected"),
    [
        (
            '{"choices":[],"usage":{"total_tokens":3}}',
            True,
            '{"choices":[],"usage":{"total_tokens":3}}',
        ),
        ('{"choices":[],"usage":{"total_tokens":3}}', False, None),
        ('{"choices":[{"index":0}],"usage":null}', False, '{"choices":[{"index":0}]}'),
        ('{"choices":[{"index":0}],"usage":{"t":1}}', False, '{"choices":[{"index":0}]}'),
        ('{"choices":[{"index":0}]}', False, '{"choices":[{"index":0}]}'),
        ("[DONE]", False, "[DONE]"),
        ("not json", False, "not json"),
        ("[1]", False, "[1]"),
    ],
)
def test_relay_drops_usage_the_caller_did_not_ask_for(
    data: str, wants_usage: bool, expected: str | None
) -> None:
    """The usage chunk and usage:null go only to callers that asked; the rest passes as is."""
    assert relay_data(data, wants_usage=wants_usage) == expected


def _turn(choices: tuple[ChoiceView, ...], usage: dict[str, int] | None) -> TurnView:
    return TurnView("t1", "completed", "q", "m", 1.0, 2.0, choices, usage, None)


def test_completion_object_from_a_turn() -> None:
    """Content, refusal, reasoning, tool calls, finish reasons and usage become a completion."""
    calls = (ToolCallView(0, "call_1", "f", '{"a":1}'),)
    turn = _turn(
        (
            ChoiceView(0, "hello", "thought", "", (), "stop"),
            ChoiceView(1, "", "", "no", calls, "tool_calls"),
        ),
        {"total_tokens": 5},
    )
    out = completion_object(turn, completion_id="c1", created=7)
    assert json.loads(json.dumps(out)) == {
        "id": "c1",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "hello",
                    "refusal": None,
                    "reasoning_content": "thought",
                },
                "logprobs": None,
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": "no",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            },
        ],
        "usage": {"total_tokens": 5},
    }


def test_completion_object_without_usage() -> None:
    """No usage reported (or not wanted) means no usage member; empty content stays ''."""
    turn = _turn((ChoiceView(0, "", "", "", (), None),), None)
    assert "usage" not in completion_object(turn, completion_id="c", created=0)
    with_usage = _turn(turn.choices, {"total_tokens": 1})
    out = completion_object(with_usage, completion_id="c", created=0, wants_usage=False)
    assert "usage" not in out
    assert out["choices"][0]["message"]["content"] == ""


@pytest.mark.parametrize(
    ("content", "limit", "code"),
    [
        ("x" * 10, 10, None),
        ("x" * 11, 10, "too_large"),
        ([{"type": "text", "text": "x" * 6}, {"type": "text", "text": "y" * 5}], 10, "too_large"),
        ([{"type": "text", "text": "x" * 6}, {"type": "image_url"}], 10, None),
        ("x" * 150_000, 0, None),
    ],
    ids=["at-limit", "over", "parts-over", "parts-under", "no-limit"],
)
def test_the_tap_prompt_obeys_max_prompt_chars(content: Any, limit: int, code: str | None) -> None:
    """The last user message (a string or text parts) over max_prompt_chars is too_large."""
    body = {
        "messages": [{"role": "user", "content": "short"}, {"role": "user", "content": content}]
    }
    if code is None:
        parse_tap_request(body, default_model="m", include_usage=True, max_prompt_chars=limit)
        return
    with pytest.raises(ClientError) as caught:
        parse_tap_request(body, default_model="m", include_usage=True, max_prompt_chars=limit)
    assert caught.value.code == code
    assert caught.value.status == 413


def _ended(status: str, error: ErrorInfo | None = None) -> TurnView:
    return TurnView("t1", status, "q", "m", 1.0, 2.0, (), None, error)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("turn", "failure"),
    [
        (_ended("completed"), None),
        (None, (503, "unavailable")),
        (_ended("truncated"), (502, "upstream_error")),
        (_ended("cancelled"), (409, "turn_ended")),
        (_ended("streaming"), (503, "unavailable")),
        (_ended("failed", ErrorInfo("internal_error", "crashed")), (500, "internal_error")),
        (_ended("failed", ErrorInfo("server_error", "boom")), (502, "upstream_error")),
        (_ended("failed"), (502, "upstream_error")),
    ],
    ids=[
        "completed",
        "forgotten",
        "truncated",
        "cancelled",
        "streaming",
        "internal",
        "upstream",
        "no-info",
    ],
)
def test_tap_failure_for_every_outcome(
    turn: TurnView | None, failure: tuple[int, str] | None
) -> None:
    """Only a completed turn is a success; every other outcome has a status and error JSON."""
    got = tap_failure(turn)
    if failure is None:
        assert got is None
        return
    assert got is not None
    assert (got.status, got.code) == failure
    assert got.body() == {"error": {"code": got.code, "message": got.message}}


def test_an_upstream_failure_keeps_the_providers_code_in_the_message() -> None:
    """The caller learns the provider's code and scrubbed message through the message."""
    got = tap_failure(_ended("failed", ErrorInfo("server_error", "boom")))
    assert got is not None
    assert got.message == "server_error: boom"
