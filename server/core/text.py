r"""Text validity of what clients send (PROTOCOL.md, "Defaults and details": Text).

Every string a client sends must be valid Unicode text: JSON's ``\ud800`` escape parses to a
lone surrogate, which no UTF-8 encoder accepts, so it would fail later, when the room encodes
an event. Non-finite numbers (``NaN``, ``Infinity``, ``1e999``) fail the same way. Both are
refused at the edge with ``bad_request`` naming the field. Sequence numbers from query
strings and headers are parsed here too, strictly.
"""

from __future__ import annotations

import math

from .codes import ErrorCode
from .errors import ClientError

# Deeper JSON than this is refused: no chat request nests this far, and the walk is recursive.
MAX_DEPTH = 64
# A seq is at most 18 ASCII digits: below 2**63, and no int() of a huge string.
MAX_SEQ_DIGITS = 18
# Keys named in an error message are cut to this many characters.
_KEY_CHARS = 40


def is_text(value: str) -> bool:
    """True when ``value`` is valid Unicode text (no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key_path(path: str, key: str) -> str:
    short = key if len(key) <= _KEY_CHARS else key[:_KEY_CHARS] + "..."
    return f"{path}.{short}" if path else short


def _refusal(path: str, what: str, ref: str | None) -> ClientError:
    return ClientError(ErrorCode.BAD_REQUEST, f"'{path or 'body'}' {what}", ref=ref)


def check_client_value(value: object, *, path: str = "", ref: str | None = None) -> None:
    """Refuse a client's JSON value that holds invalid text or a non-finite number.

    Args:
        value: parsed JSON (dicts, lists, strings, numbers, booleans, None).
        path: the name of ``value`` in the error (``messages[2].content``); empty for the root.
        ref: the ``ref`` of the error (a frame's valid id).

    Raises:
        ClientError: ``bad_request`` naming the first bad field.
    """
    _check(value, path, ref, 0)


def _check(value: object, path: str, ref: str | None, depth: int) -> None:
    if isinstance(value, str):
        if not is_text(value):
            raise _refusal(path, "is not valid Unicode text", ref)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _refusal(path, "is not a finite number", ref)
    elif isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            raise _refusal(path, f"nests deeper than {MAX_DEPTH} levels", ref)
        if isinstance(value, list):
            for index, item in enumerate(value):
                _check(item, f"{path}[{index}]", ref, depth + 1)
            return
        for key, item in value.items():
            if not is_text(key):
                raise _refusal(path, "has a key that is not valid Unicode text", ref)
            _check(item, _key_path(path, key), ref, depth + 1)


def check_client_text(value: str, name: str) -> str:
    """Return ``value`` (a query parameter or header named ``name``) when it is valid text.

    Raises:
        ClientError: ``bad_request`` naming ``name``.
    """
    if not is_text(value):
        raise ClientError(ErrorCode.BAD_REQUEST, f"'{name}' is not valid Unicode text")
    return value


def parse_seq(value: str) -> int | None:
    """A seq from a query string or header: 1 to 18 ASCII digits, else None.

    ``str.isdigit()`` also accepts digits such as ``²`` that ``int()`` refuses, and ``int()``
    of thousands of digits is slow or refused: neither may reach it.
    """
    if not 0 < len(value) <= MAX_SEQ_DIGITS or not value.isascii() or not value.isdigit():
        return None
    return int(value)
