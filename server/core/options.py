"""The prompt ``options`` allowed by PROTOCOL.md, each with its type rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .codes import ErrorCode
from .errors import ClientError


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _temperature(v: object) -> bool:
    return _is_number(v) and 0 <= v <= 2  # type: ignore[operator]


def _top_p(v: object) -> bool:
    return _is_number(v) and 0 <= v <= 1  # type: ignore[operator]


def _positive_int(v: object) -> bool:
    return _is_int(v) and v >= 1  # type: ignore[operator]


def _choices(v: object) -> bool:
    return _is_int(v) and 1 <= v <= 16  # type: ignore[operator]


def _stop(v: object) -> bool:
    if isinstance(v, str):
        return True
    return isinstance(v, list) and len(v) <= 4 and all(isinstance(s, str) for s in v)


def _tools(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(t, dict) for t in v)


def _tool_choice(v: object) -> bool:
    return isinstance(v, str | dict)


def _object(v: object) -> bool:
    return isinstance(v, dict)


def _string(v: object) -> bool:
    return isinstance(v, str)


# Key -> (rule, what the rule wants, said in the error).
OPTION_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "temperature": (_temperature, "a number from 0 to 2"),
    "top_p": (_top_p, "a number from 0 to 1"),
    "max_tokens": (_positive_int, "a positive integer"),
    "max_completion_tokens": (_positive_int, "a positive integer"),
    "n": (_choices, "an integer from 1 to 16"),
    "seed": (_is_int, "an integer"),
    "stop": (_stop, "a string or a list of up to 4 strings"),
    "tools": (_tools, "a list of objects"),
    "tool_choice": (_tool_choice, "a string or an object"),
    "response_format": (_object, "an object"),
    "reasoning_effort": (_string, "a string"),
}


def validate_options(raw: Mapping[str, Any], *, ref: str | None = None) -> dict[str, Any]:
    """Return a copy of ``raw`` after checking every key and value.

    Raises:
        ClientError: ``bad_request`` naming the unknown key or the wrongly typed value.
    """
    unknown = sorted(k for k in raw if k not in OPTION_RULES)
    if unknown:
        raise ClientError(
            ErrorCode.BAD_REQUEST, f"unknown option(s): {', '.join(unknown)}", ref=ref
        )
    for key, value in raw.items():
        rule, wants = OPTION_RULES[key]
        if not rule(value):
            raise ClientError(ErrorCode.BAD_REQUEST, f"option '{key}' must be {wants}", ref=ref)
    return dict(raw)
