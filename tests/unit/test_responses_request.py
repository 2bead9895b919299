"""A room's prompt as a Responses body: history, options under their Responses names, refusals.

The converted tools, tool choices, text formats and reasoning are also checked against the
official SDK's request types (``openai.types.responses``), so a shape the Responses API does
not take fails here rather than at the upstream.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openai.types.responses import ResponseTextConfigParam, ToolParam
from openai.types.responses.response_create_params import ToolChoice
from openai.types.shared_params import Reasoning
from pydantic import TypeAdapter

from server.core.codes import ErrorCode
from server.core.errors import ClientError
from server.core.options import OPTION_RULES
from server.core.responses_request import (
    RESPONSES_OPTIONS,
    check_responses_options,
    responses_body,
)

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
CHAT_FUNCTION = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather", "parameters": SCHEMA},
}
FLAT_FUNCTION = {"type": "function", "name": "get_weather", "parameters": SCHEMA, "strict": True}
GRAMMAR = {"type": "grammar", "grammar": {"syntax": "regex", "definition": "[0-9]+"}}
JSON_SCHEMA = {"name": "weather", "schema": SCHEMA, "strict": True}

# (what the row checks, the prompt's options, what the body holds beside model/input/stream).
OPTIONS: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = [
    ("no options", None, {}),
    ("empty options", {}, {}),
    ("temperature", {"temperature": 0.2}, {"temperature": 0.2}),
    ("top_p", {"top_p": 0.9}, {"top_p": 0.9}),
    ("max_tokens", {"max_tokens": 5}, {"max_output_tokens": 5}),
    ("max_completion_tokens", {"max_completion_tokens": 7}, {"max_output_tokens": 7}),
    ("reasoning_effort", {"reasoning_effort": "low"}, {"reasoning": {"effort": "low"}}),
    (
        "several at once",
        {"temperature": 1, "max_tokens": 9, "reasoning_effort": "high"},
        {"temperature": 1, "max_output_tokens": 9, "reasoning": {"effort": "high"}},
    ),
    (
        "a chat function is flattened, non-strict as in chat",
        {"tools": [CHAT_FUNCTION]},
        {
            "tools": [
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "The weather",
                    "parameters": SCHEMA,
                    "strict": False,
                }
            ]
        },
    ),
    (
        "a strict chat function stays strict",
        {"tools": [{"type": "function", "function": {"name": "f", "strict": True}}]},
        {"tools": [{"type": "function", "name": "f", "strict": True, "parameters": None}]},
    ),
    (
        "a chat function's own type key does not win over its type",
        {"tools": [{"type": "function", "function": {"name": "f", "type": "custom"}}]},
        {"tools": [{"type": "function", "name": "f", "strict": False, "parameters": None}]},
    ),
    (
        "a chat custom tool is flattened, its grammar format too",
        {"tools": [{"type": "custom", "custom": {"name": "calc", "format": GRAMMAR}}]},
        {
            "tools": [
                {
                    "type": "custom",
                    "name": "calc",
                    "format": {"type": "grammar", "syntax": "regex", "definition": "[0-9]+"},
                }
            ]
        },
    ),
    (
        "a chat custom tool with a text format or none, nothing added",
        {
            "tools": [
                {"type": "custom", "custom": {"name": "a", "format": {"type": "text"}}},
                {"type": "custom", "custom": {"name": "b", "description": "free text"}},
            ]
        },
        {
            "tools": [
                {"type": "custom", "name": "a", "format": {"type": "text"}},
                {"type": "custom", "name": "b", "description": "free text"},
            ]
        },
    ),
    (
        "a tool already in the Responses shape is left as it is",
        {"tools": [FLAT_FUNCTION, {"type": "web_search"}]},
        {"tools": [FLAT_FUNCTION, {"type": "web_search"}]},
    ),
    (
        "tools that are not objects pass through for the upstream to refuse",
        {"tools": ["get_weather", {"type": 3}, {"type": "function", "function": "f"}]},
        {"tools": ["get_weather", {"type": 3}, {"type": "function", "function": "f"}]},
    ),
    ("tools that are not a list pass through", {"tools": {"a": 1}}, {"tools": {"a": 1}}),
    ("tool_choice by word", {"tool_choice": "required"}, {"tool_choice": "required"}),
    (
        "a chat function tool_choice",
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"tool_choice": {"type": "function", "name": "get_weather"}},
    ),
    (
        "a chat custom tool_choice",
        {"tool_choice": {"type": "custom", "custom": {"name": "calc"}}},
        {"tool_choice": {"type": "custom", "name": "calc"}},
    ),
    (
        "a chat allowed_tools tool_choice, its tools flattened",
        {
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [
                        {"type": "function", "function": {"name": "get_weather"}},
                        {"type": "custom", "custom": {"name": "calc"}},
                    ],
                },
            }
        },
        {
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [
                    {"type": "function", "name": "get_weather"},
                    {"type": "custom", "name": "calc"},
                ],
            }
        },
    ),
    (
        "an allowed_tools tool_choice whose tools are no list",
        {"tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto"}}},
        {"tool_choice": {"type": "allowed_tools", "mode": "auto"}},
    ),
    (
        "a tool_choice already in the Responses shape",
        {"tool_choice": {"type": "function", "name": "get_weather"}},
        {"tool_choice": {"type": "function", "name": "get_weather"}},
    ),
    (
        "a json_schema response_format becomes text.format",
        {"response_format": {"type": "json_schema", "json_schema": JSON_SCHEMA}},
        {"text": {"format": {"type": "json_schema", **JSON_SCHEMA}}},
    ),
    (
        "a json_object response_format",
        {"response_format": {"type": "json_object"}},
        {"text": {"format": {"type": "json_object"}}},
    ),
    (
        "a text response_format",
        {"response_format": {"type": "text"}},
        {"text": {"format": {"type": "text"}}},
    ),
]

# Rows whose options are well formed: what they turn into must be a Responses request's shape.
WELL_FORMED = [row for row in OPTIONS if "pass through" not in row[0] and "no list" not in row[0]]
ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "tool_choice": TypeAdapter(ToolChoice),
    "text": TypeAdapter(ResponseTextConfigParam),
    "reasoning": TypeAdapter(Reasoning),
}
TOOL = TypeAdapter(ToolParam)


def _extras(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("model", "input", "stream")}


@pytest.mark.parametrize(("what", "options", "expected"), OPTIONS, ids=[r[0] for r in OPTIONS])
def test_options_go_under_their_responses_names(
    what: str, options: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    """Each chat option lands in the body under its Responses name and shape, nothing else."""
    body = responses_body([{"role": "user", "content": "hi"}], "m", options)
    assert _extras(body) == expected, what


@pytest.mark.parametrize("options", [r[1] for r in OPTIONS], ids=[r[0] for r in OPTIONS])
def test_the_prompts_options_are_left_as_they_were(options: dict[str, Any] | None) -> None:
    """Converting copies: the options the room keeps for its turn are not rewritten."""
    before = copy.deepcopy(options)
    responses_body([{"role": "user", "content": "hi"}], "m", options)
    assert options == before


@pytest.mark.parametrize("options", [r[1] for r in WELL_FORMED], ids=[r[0] for r in WELL_FORMED])
def test_converted_options_have_the_sdks_request_shapes(options: dict[str, Any] | None) -> None:
    """Tools, tool_choice, text and reasoning validate against the SDK's Responses types."""
    body = responses_body([{"role": "user", "content": "hi"}], "m", options)
    for tool in body.get("tools", ()):
        TOOL.validate_python(tool)
    for name, adapter in ADAPTERS.items():
        if name in body:
            adapter.validate_python(body[name])


def test_chat_shapes_are_not_responses_shapes() -> None:
    """The SDK check above can fail: the chat shapes themselves do not validate."""
    with pytest.raises(ValueError, match="name"):
        TOOL.validate_python(CHAT_FUNCTION)
    with pytest.raises(ValueError, match="strict"):
        TOOL.validate_python({"type": "function", "name": "f", "parameters": SCHEMA})
    with pytest.raises(ValueError, match="name"):
        ADAPTERS["tool_choice"].validate_python(
            {"type": "function", "function": {"name": "get_weather"}}
        )
    with pytest.raises(ValueError, match="name"):
        ADAPTERS["text"].validate_python(
            {"format": {"type": "json_schema", "json_schema": JSON_SCHEMA}}
        )


def test_every_supported_option_has_a_row() -> None:
    """The table covers every option with a Responses name, and every one of them is allowed."""
    covered = {k for _, options, _ in OPTIONS for k in options or {}}
    assert covered == set(RESPONSES_OPTIONS)
    assert set(RESPONSES_OPTIONS) <= set(OPTION_RULES)


Message = dict[str, str]
SYSTEM: Message = {"role": "system", "content": "Be brief."}
U1: Message = {"role": "user", "content": "first question"}
A1: Message = {"role": "assistant", "content": "first answer"}
U2: Message = {"role": "user", "content": "second question"}

# (what, the room's messages, the body's instructions or None when absent, its input).
HISTORIES: list[tuple[str, list[Message], str | None, list[Message]]] = [
    ("a prompt alone", [U1], None, [U1]),
    ("a system prompt becomes instructions", [SYSTEM, U1], "Be brief.", [U1]),
    ("earlier turns come first, the prompt last", [SYSTEM, U1, A1, U2], "Be brief.", [U1, A1, U2]),
    (
        "system messages are joined in order",
        [SYSTEM, {"role": "system", "content": "Be kind."}, U1],
        "Be brief.\n\nBe kind.",
        [U1],
    ),
    (
        "other roles are left out",
        [{"role": "tool", "content": "42"}, U1, {"role": "developer", "content": "x"}],
        None,
        [U1],
    ),
    (
        "only role and content are kept",
        [{"role": "user", "content": "hi", "name": "ann"}],
        None,
        [{"role": "user", "content": "hi"}],
    ),
]


@pytest.mark.parametrize(
    ("what", "messages", "instructions", "items"), HISTORIES, ids=[r[0] for r in HISTORIES]
)
def test_history_becomes_instructions_and_input(
    what: str, messages: list[Message], instructions: str | None, items: list[Message]
) -> None:
    """System messages become ``instructions``, user and assistant ones ``input``, in order."""
    body = responses_body(messages, "gpt-x", None)
    assert body.get("instructions") == instructions, what
    assert ("instructions" in body) is (instructions is not None)
    assert body["input"] == items
    assert body["model"] == "gpt-x"
    assert body["stream"] is True


@pytest.mark.parametrize(
    ("background", "expected"),
    [(False, {}), (True, {"background": True, "store": True})],
)
def test_background_mode_asks_to_store_the_response(
    background: bool, expected: dict[str, Any]
) -> None:
    """Background mode needs a stored response; without it neither key is sent."""
    body = responses_body([U1], "m", {"temperature": 0.5}, background=background)
    assert _extras(body) == {"temperature": 0.5, **expected}


# (the prompt's options, the option named in the refusal: the first lacking one by name).
LACKING: list[tuple[dict[str, Any], str]] = [
    ({"n": 2}, "n"),
    ({"stop": ["END"]}, "stop"),
    ({"seed": 7}, "seed"),
    ({"seed": 7, "n": 2, "temperature": 1}, "n"),
    ({"stop": "x", "seed": 1}, "seed"),
    ({"logprobs": True}, "logprobs"),
]


@pytest.mark.parametrize(("options", "name"), LACKING)
@pytest.mark.parametrize("ref", [None, "p-9"])
def test_an_option_the_responses_api_lacks_is_refused_by_name(
    options: dict[str, Any], name: str, ref: str | None
) -> None:
    """bad_request names the option and carries the prompt's id; the body refuses it too."""
    with pytest.raises(ClientError) as refused:
        check_responses_options(options, ref)
    assert refused.value.code is ErrorCode.BAD_REQUEST
    assert f"option {name!r} is not supported" in refused.value.message
    assert refused.value.ref == ref
    assert refused.value.status == 400
    with pytest.raises(ClientError, match=f"option {name!r}"):
        responses_body([U1], "m", options)


@pytest.mark.parametrize(
    "options",
    [None, {}, dict.fromkeys(RESPONSES_OPTIONS)],
    ids=["none", "empty", "every supported option"],
)
def test_supported_options_pass_the_check(options: dict[str, Any] | None) -> None:
    """Options the Responses API has a name for raise nothing."""
    check_responses_options(options, "p-1")
