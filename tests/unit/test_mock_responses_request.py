"""Reading a Responses body: the prompt and counts derive from ``input`` as chat's do."""

from __future__ import annotations

from typing import Any

import pytest

from server.tools.mock_responses_request import parse_responses_request
from server.tools.mock_scenarios import parse_request

PARTS = [{"type": "input_text", "text": "Two"}, {"type": "input_text", "text": "parts"}]

# (Responses input, the chat messages it means)
SAME_AS_CHAT: list[tuple[Any, list[dict[str, Any]]]] = [
    ("Hello", [{"role": "user", "content": "Hello"}]),
    ("", [{"role": "user", "content": ""}]),
    ([{"role": "user", "content": PARTS}], [{"role": "user", "content": PARTS}]),
    (
        [
            {"role": "user", "content": "first"},
            {"type": "message", "role": "assistant", "content": "reply"},
            {"type": "function_call_output", "call_id": "c", "output": "{}"},
            {"role": "user", "content": "second"},
            {"role": "developer", "content": "rules"},
        ],
        [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": "second"},
            {"role": "developer", "content": "rules"},
        ],
    ),
    ([{"role": "assistant", "content": "no user"}], [{"role": "assistant", "content": "no user"}]),
]


@pytest.mark.parametrize(("value", "messages"), SAME_AS_CHAT)
def test_prompt_and_tokens_match_chat(value: Any, messages: list[dict[str, Any]]) -> None:
    """The prompt and input tokens equal chat's prompt and prompt tokens for the same messages."""
    responses = parse_responses_request({"model": "mock", "input": value})
    chat = parse_request({"model": "mock", "messages": messages})
    assert (responses.prompt, responses.input_tokens) == (chat.prompt, chat.prompt_tokens)


def test_instructions_count_like_a_system_message() -> None:
    """Instructions add to the input tokens as a leading system message, not to the prompt."""
    body = {"input": "Hello", "instructions": "Be brief."}
    responses = parse_responses_request(body)
    chat = parse_request(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello"},
            ]
        }
    )
    assert (responses.prompt, responses.input_tokens) == ("Hello", chat.prompt_tokens)
    assert responses.instructions == "Be brief."


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"input": "x"}, ("mock", False, False, True, None, None)),
        (
            {"input": "x", "model": "mock-tools", "stream": True, "max_output_tokens": 9},
            ("mock-tools", True, False, True, 9, None),
        ),
        ({"input": "x", "background": True}, ("mock", False, True, True, None, None)),
        ({"input": "x", "store": False}, ("mock", False, False, False, None, None)),
        (
            {"input": "x", "tools": [{"type": "web_search"}, {"type": "function", "name": "f"}]},
            ("mock", False, False, True, None, "f"),
        ),
    ],
)
def test_options(body: dict[str, Any], expected: tuple[Any, ...]) -> None:
    """Model, flags (store defaults to true), the token limit and the first function tool."""
    req = parse_responses_request(body)
    got = (req.model, req.stream, req.background, req.store, req.max_output_tokens, req.tool_name)
    assert got == expected
