"""The text rule at the edge.

Lone surrogates and non-finite numbers are refused, naming the field; seqs from query strings and
headers are parsed strictly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.codec import decode_client_frame, load_client_object
from server.core.errors import ClientError
from server.core.sse_frames import parse_last_event_id
from server.core.text import (
    MAX_DEPTH,
    check_client_text,
    check_client_value,
    is_text,
    parse_seq,
)

LONE = "\ud800"


def nested(depth: int) -> Any:
    """A JSON value ``depth`` containers deep: lists, with a dict inside."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


GOOD: dict[str, object] = {
    "empty": {},
    "strings": {"a": "héllo 🚀", "b": ["x", {"c": "\U0001f600"}]},
    "numbers": {"t": 0.5, "n": 3, "big": 10**30, "neg": -1.5e300},
    "others": {"t": True, "f": False, "n": None},
    "deepest allowed": nested(MAX_DEPTH),
}


@pytest.mark.parametrize("value", GOOD.values(), ids=GOOD.keys())
def test_valid_values_pass(value: object) -> None:
    """Valid text, finite numbers and nesting within the bound pass unchanged."""
    check_client_value(value)


BAD: dict[str, tuple[object, str]] = {
    "root string": (LONE, "'body' is not valid Unicode text"),
    "content": ({"content": f"hi {LONE} there"}, "'content' is not valid"),
    "id": ({"id": LONE}, "'id' is not valid"),
    "low surrogate": ({"model": "\udfff"}, "'model' is not valid"),
    "stop item": ({"options": {"stop": ["a", LONE]}}, "'options.stop[1]' is not valid"),
    "message": (
        {"messages": [{}, {}, {"role": "user", "content": LONE}]},
        "'messages[2].content' is not valid",
    ),
    "content part": (
        {"messages": [{"content": [{"type": "text", "text": LONE}]}]},
        "'messages[0].content[0].text' is not valid",
    ),
    "root key": ({LONE: 1}, "'body' has a key that is not valid"),
    "nested key": ({"tools": [{"a": {LONE: 1}}]}, "'tools[0].a' has a key"),
    "nan": ({"temperature": float("nan")}, "'temperature' is not a finite number"),
    "inf": ({"options": {"top_p": float("inf")}}, "'options.top_p' is not a finite"),
    "-inf": ({"x": [float("-inf")]}, "'x[0]' is not a finite"),
    "too deep": (nested(MAX_DEPTH + 1), f"nests deeper than {MAX_DEPTH} levels"),
    "long key cut": ({"k" * 100: LONE}, "'" + "k" * 40 + "...' is not valid"),
}


@pytest.mark.parametrize(("value", "message"), BAD.values(), ids=BAD.keys())
def test_bad_values_are_refused_naming_the_field(value: object, message: str) -> None:
    """Invalid text, a non-finite number or too deep nesting.

    Bad_request naming the field, with a message that is itself valid text.
    """
    with pytest.raises(ClientError) as info:
        check_client_value(value, ref="r1")
    assert info.value.code == "bad_request"
    assert message in info.value.message
    assert info.value.ref == "r1"
    assert is_text(info.value.message)


def test_a_path_prefix_names_the_field() -> None:
    """A given path is the start of the named field."""
    with pytest.raises(ClientError, match=r"'frame\.a' is not valid"):
        check_client_value({"a": LONE}, path="frame")


@pytest.mark.parametrize(("value", "ok"), [("", True), ("é🚀", True), (LONE, False)])
def test_is_text(value: str, ok: bool) -> None:
    """is_text is False exactly for strings holding a lone surrogate."""
    assert is_text(value) is ok


def test_check_client_text_names_the_parameter() -> None:
    """A query parameter or header that is not valid text is bad_request naming it."""
    assert check_client_text("ok", "epoch") == "ok"
    with pytest.raises(ClientError, match="'epoch' is not valid Unicode text"):
        check_client_text(f"e{LONE}", "epoch")


@pytest.mark.parametrize(
    ("value", "seq"),
    [
        ("0", 0),
        ("41", 41),
        ("007", 7),
        ("9" * 18, 10**18 - 1),
        ("9" * 19, None),
        ("1" * 5000, None),
        ("", None),
        ("²", None),
        ("1²", None),
        ("٣", None),  # an Arabic-Indic digit: isdigit() and int() accept it, we do not
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1_000", None),
    ],
)
def test_parse_seq_takes_ascii_digits_only(value: str, seq: int | None) -> None:
    """A seq is 1-18 ASCII digits.

    Everything else (superscripts, other scripts' digits, thousands of digits, signs, spaces) is
    None.
    """
    assert parse_seq(value) == seq


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ep:²", None),
        ("ep:" + "1" * 5000, None),
        ("ep:٣", None),
        ("ep:" + "9" * 18, ("ep", 10**18 - 1)),
    ],
)
def test_last_event_id_seq_is_strict(value: str, expected: tuple[str, int] | None) -> None:
    """Last-Event-ID's seq follows parse_seq: a seq of another shape is no resume."""
    assert parse_last_event_id(value) == expected


def test_last_event_id_that_is_not_text_is_refused() -> None:
    """A Last-Event-ID holding a lone surrogate is bad_request naming where it came from."""
    with pytest.raises(ClientError, match="'last_event_id' is not valid"):
        parse_last_event_id(f"e{LONE}:1", "last_event_id")
    with pytest.raises(ClientError, match="'Last-Event-ID' is not valid"):
        parse_last_event_id(f"e{LONE}:1")


def _frame(**fields: Any) -> str:
    return json.dumps(fields)  # ensure_ascii: a lone surrogate travels as its \\u escape


BAD_FRAMES: dict[str, tuple[str, str | None, str]] = {
    "content": (_frame(type="prompt", content=f"a{LONE}", id="p1"), "p1", "'content'"),
    "model": (_frame(type="prompt", content="a", model=LONE, id="p2"), "p2", "'model'"),
    "stop": (
        _frame(type="prompt", content="a", options={"stop": [LONE]}, id="p3"),
        "p3",
        "'options.stop[0]'",
    ),
    "bad id is not echoed": (_frame(type="prompt", content="a", id=LONE), None, "'id'"),
    "bad id on a bad type": (_frame(type="nope", id=LONE), None, "'id'"),
    "cancel turn": (_frame(type="cancel", turn=LONE, id="c1"), "c1", "'turn'"),
    "type": (_frame(type=LONE, id="x"), "x", "'type'"),
    "nan option": (
        '{"type":"prompt","content":"a","options":{"temperature":NaN}}',
        None,
        "'options.temperature'",
    ),
    "1e999": (
        '{"type":"prompt","content":"a","id":"q","options":{"seed":1e999}}',
        "q",
        "'options.seed'",
    ),
}


@pytest.mark.parametrize(("text", "ref", "field"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_frames_with_bad_text_or_numbers_are_bad_request(
    text: str, ref: str | None, field: str
) -> None:
    """A client frame with bad text or a non-finite number is bad_request.

    A client frame with a lone surrogate or a non-finite number anywhere is bad_request naming the
    field; ``ref`` echoes the id only when the id is valid text.
    """
    with pytest.raises(ClientError) as info:
        decode_client_frame(text, max_prompt_chars=0)
    assert info.value.code == "bad_request"
    assert info.value.ref == ref
    assert field in info.value.message


def test_client_bodies_are_checked_too() -> None:
    """load_client_object parses an object and refuses bad text naming the field."""
    assert load_client_object(b'{"content": "hi"}') == {"content": "hi"}
    with pytest.raises(ClientError, match=r"'messages\[0\]\.content' is not valid"):
        load_client_object('{"messages": [{"content": "\\ud800"}]}')
    with pytest.raises(ClientError, match="'temperature' is not a finite number"):
        load_client_object('{"temperature": Infinity}')
