"""Prompt ``options``: every allowed key with good and bad values, unknown keys refused."""

from __future__ import annotations

import pytest

from server.core.errors import ClientError
from server.core.options import OPTION_RULES, validate_options

GOOD: list[tuple[str, object]] = [
    ("temperature", 0),
    ("temperature", 2),
    ("temperature", 0.7),
    ("top_p", 0),
    ("top_p", 1.0),
    ("max_tokens", 1),
    ("max_tokens", 4096),
    ("max_completion_tokens", 1),
    ("n", 1),
    ("n", 16),
    ("seed", -5),
    ("seed", 0),
    ("stop", "END"),
    ("stop", []),
    ("stop", ["a", "b", "c", "d"]),
    ("tools", []),
    ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "auto"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}),
    ("response_format", {"type": "json_object"}),
    ("reasoning_effort", "low"),
]

BAD: list[tuple[str, object]] = [
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("temperature", "1"),
    ("temperature", True),
    ("temperature", None),
    ("top_p", 1.5),
    ("top_p", -1),
    ("top_p", False),
    ("max_tokens", 0),
    ("max_tokens", 1.0),
    ("max_tokens", True),
    ("max_completion_tokens", -1),
    ("n", 0),
    ("n", 17),
    ("n", 2.0),
    ("n", True),
    ("seed", 1.5),
    ("seed", "1"),
    ("seed", False),
    ("stop", ["a", "b", "c", "d", "e"]),
    ("stop", [1]),
    ("stop", 3),
    ("tools", {"type": "function"}),
    ("tools", ["f"]),
    ("tool_choice", 1),
    ("tool_choice", ["auto"]),
    ("response_format", "json"),
    ("reasoning_effort", 1),
]


@pytest.mark.parametrize(("key", "value"), GOOD, ids=[f"{k}={v!r}" for k, v in GOOD])
def test_good_values_pass_and_are_copied(key: str, value: object) -> None:
    """An allowed key with a fitting value comes back in a new dict."""
    raw = {key: value}
    out = validate_options(raw)
    assert out == raw
    assert out is not raw


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_bad_values_are_bad_request_naming_the_key(key: str, value: object) -> None:
    """A wrongly typed or out-of-range value is bad_request naming the key and the rule."""
    with pytest.raises(ClientError) as info:
        validate_options({key: value}, ref="p-1")
    assert info.value.code == "bad_request"
    assert info.value.ref == "p-1"
    assert f"option '{key}' must be {OPTION_RULES[key][1]}" == info.value.message


def test_every_rule_has_a_good_and_a_bad_case() -> None:
    """The tables above exercise every key of OPTION_RULES (and only those)."""
    assert {k for k, _ in GOOD} == set(OPTION_RULES)
    assert {k for k, _ in BAD} == set(OPTION_RULES)


def test_the_protocol_keys_are_exactly_the_allowed_ones() -> None:
    """OPTION_RULES holds exactly the options PROTOCOL.md lists."""
    assert set(OPTION_RULES) == {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "seed",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "reasoning_effort",
    }


def test_unknown_keys_are_named_sorted() -> None:
    """Unknown keys are refused, all of them named in sorted order, before value checks."""
    with pytest.raises(ClientError) as info:
        validate_options({"zeta": 1, "temperature": 9, "alpha": 2, "stream": True})
    assert info.value.code == "bad_request"
    assert info.value.ref is None
    assert info.value.message == "unknown option(s): alpha, stream, zeta"


def test_empty_and_combined_options() -> None:
    """No options is fine; several good ones together pass."""
    assert validate_options({}) == {}
    many = {"temperature": 1, "n": 3, "stop": ["x"], "seed": 7}
    assert validate_options(many) == many
