r"""Upstream text repair: whatever an upstream sends is made valid, never refused.

JSON may carry what UTF-8 text and our encoder cannot: a lone surrogate (the escape
``\ud800`` with no partner) and numbers without a finite value (``NaN``, ``Infinity``, or
``1e999``, which parses to infinity; an integer too long to convert). A client sending them is
refused (PROTOCOL.md, "Defaults and details"); an upstream's are repaired as its JSON enters
the core, before any state changes, so every string a room keeps and every delta it sends is
the same valid text: each lone surrogate becomes U+FFFD, each such number is dropped (its key
removed, or its list item). Repairs are counted so the driver can report them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

REPLACEMENT = "\ufffd"

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON escape that may decode to a surrogate: the only way one gets into parsed text, since
# the SSE decoder has already replaced bytes that are not UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def repair_text(text: str) -> str:
    """``text`` with every surrogate code point (necessarily lone) replaced by U+FFFD."""
    return _SURROGATE.sub(REPLACEMENT, text)


class _Numbers:
    """json.loads hooks that note whether any number has no finite value."""

    __slots__ = ("odd",)

    def __init__(self) -> None:
        self.odd = False

    def constant(self, name: str) -> float:
        self.odd = True
        return float(name)  # NaN, Infinity, -Infinity

    def real(self, text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            self.odd = True  # e.g. 1e999
        return value

    def integer(self, text: str) -> int | float:
        try:
            return int(text)
        except ValueError:  # longer than the interpreter converts: no value we can hold
            self.odd = True
            return math.inf


def load_json(text: str) -> tuple[object, int]:
    """Parse upstream JSON and repair it; the value and how many values were repaired.

    Raises:
        ValueError: ``text`` is not JSON.
        RecursionError: ``text`` nests deeper than the parser goes.
    """
    numbers = _Numbers()
    value = json.loads(
        text, parse_constant=numbers.constant, parse_float=numbers.real, parse_int=numbers.integer
    )
    if numbers.odd or _SURROGATE_ESCAPE.search(text):
        return repair_json(value)
    return value, 0


def repair_json(value: object) -> tuple[object, int]:
    """Repair a parsed JSON value in place; the value and how many values were repaired.

    Strings (object keys too) lose their surrogates; non-finite numbers are dropped from
    objects and arrays. A non-finite number at the top becomes None. Containers are changed
    in place and walked with a stack, so nesting depth costs no recursion.
    """
    if isinstance(value, str):
        fixed = repair_text(value)
        return fixed, int(fixed != value)
    if _dropped(value):
        return None, 1
    repairs = 0
    stack: list[Any] = [value] if isinstance(value, dict | list) else []
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        kept: list[tuple[object, object]] = []
        changed = False
        for key, item in items:
            if isinstance(key, str):
                fixed_key = repair_text(key)
                if fixed_key != key:
                    key, changed = fixed_key, True
                    repairs += 1
            if _dropped(item):
                changed = True
                repairs += 1
                continue
            if isinstance(item, str):
                fixed = repair_text(item)
                if fixed != item:
                    item, changed = fixed, True
                    repairs += 1
            elif isinstance(item, dict | list):
                stack.append(item)
            kept.append((key, item))
        if changed:
            if isinstance(node, dict):
                node.clear()
                node.update(kept)
            else:
                node[:] = [item for _, item in kept]
    return value, repairs


def _dropped(value: object) -> bool:
    """A number JSON text may spell but UTF-8 JSON output may not: NaN or an infinity."""
    return isinstance(value, float) and not math.isfinite(value)
