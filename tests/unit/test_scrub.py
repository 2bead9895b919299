"""Secret scrubbing, the error classes and the room-name rule."""

from __future__ import annotations

import pytest

from server.core.codes import ErrorCode
from server.core.errors import (
    HTTP_STATUS,
    BrokerError,
    ClientError,
    ConfigError,
    FanoutError,
    UpstreamError,
)
from server.core.scrub import MAX_MESSAGE_CHARS, scrub
from server.core.types import parse_room_name


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("plain text", (), "plain text"),
        ("key sk-abcdefghijklmnop end", (), "key [redacted] end"),
        ("sk-proj-AbC_dEf-1234567", (), "[redacted]"),
        ("rk-abcdefgh and pk-12345678", (), "[redacted] and [redacted]"),
        ("sk-short", (), "sk-short"),
        ("task-abcdefghijk", (), "task-abcdefghijk"),
        ("Authorization: Bearer abc.DEF-123/+x==", (), "Authorization: Bearer [redacted]"),
        ("bearer   tok", (), "Bearer [redacted]"),
        ("https://x/?api_key=abc123&b=2", (), "https://x/?api_key=[redacted]&b=2"),
        (
            "apikey=1 api-key=2 ACCESS_TOKEN=3",
            (),
            "apikey=[redacted] api-key=[redacted] ACCESS_TOKEN=[redacted]",
        ),
        ('token=abc" secret=xyz', (), 'token=[redacted]" secret=[redacted]'),
        ("my hunter2 pw", ("hunter2",), "my [redacted] pw"),
        ("abc in abcabc", ("abc",), "abc in abcabc"),
        ("abcd abcd", ("abcd", ""), "[redacted] [redacted]"),
        ("one two", ("one", "two!"), "one two"),
    ],
    ids=[
        "nothing",
        "sk-key",
        "sk-proj",
        "rk-pk",
        "too-short-key",
        "word-boundary",
        "bearer",
        "bearer-lower",
        "url-param",
        "param-variants",
        "token-secret",
        "known-secret",
        "secret-under-4-chars-kept",
        "secret-4-chars",
        "unmatched-secret",
    ],
)
def test_scrub(text: str, secrets: tuple[str, ...], expected: str) -> None:
    """Known secrets and credential-shaped strings are replaced; the rest is untouched."""
    assert scrub(text, secrets) == expected


def test_scrub_bounds_long_text() -> None:
    """Text over the bound is cut to exactly MAX_MESSAGE_CHARS, ending in an ellipsis."""
    assert scrub("x" * MAX_MESSAGE_CHARS) == "x" * MAX_MESSAGE_CHARS
    out = scrub("x" * (MAX_MESSAGE_CHARS + 1))
    assert len(out) == MAX_MESSAGE_CHARS
    assert out == "x" * (MAX_MESSAGE_CHARS - 1) + "…"


def test_scrub_redacts_before_bounding() -> None:
    """A secret straddling the cut is still redacted (replacement happens first)."""
    secret = "s3cr3t-value"
    text = "x" * (MAX_MESSAGE_CHARS - 5) + secret
    out = scrub(text, (secret,))
    assert "s3cr3" not in out
    assert len(out) == MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    ("code", "status"),
    [*HTTP_STATUS.items(), (ErrorCode.BAD_CHUNK, 400)],
)
def test_client_error_status(code: ErrorCode, status: int) -> None:
    """ClientError.status maps each protocol code to its HTTP status, 400 by default."""
    assert ErrorCode.BAD_CHUNK not in HTTP_STATUS
    assert ClientError(code, "m").status == status


def test_protocol_statuses() -> None:
    """The HTTP statuses are the ones PROTOCOL.md names."""
    assert HTTP_STATUS["bad_request"] == 400
    assert HTTP_STATUS["turn_in_progress"] == 409
    assert HTTP_STATUS["too_large"] == 413
    assert HTTP_STATUS["upstream_error"] == 502
    assert HTTP_STATUS["unavailable"] == 503


def test_error_fields() -> None:
    """ClientError and UpstreamError keep their fields; all share FanoutError."""
    err = ClientError(ErrorCode.RATE_LIMITED, "slow", ref="p", temporary=True, retry_after_ms=10)
    assert (err.code, err.message, err.ref, err.temporary, err.retry_after_ms) == (
        "rate_limited",
        "slow",
        "p",
        True,
        10,
    )
    assert str(err) == "slow"
    plain = ClientError(ErrorCode.BAD_REQUEST, "m")
    assert (plain.ref, plain.temporary, plain.retry_after_ms) == (None, False, None)
    up = UpstreamError("upstream_error", "boom", status=502, retry_after_ms=5)
    assert (up.code, up.message, up.status, up.retry_after_ms, str(up)) == (
        "upstream_error",
        "boom",
        502,
        5,
        "boom",
    )
    assert UpstreamError("c", "m").status is None
    for cls in (ClientError, UpstreamError, BrokerError, ConfigError):
        assert issubclass(cls, FanoutError)


@pytest.mark.parametrize("name", ["a", "demo", "A-b_c.9", "0", "x" * 64, "room.-_"])
def test_good_room_names(name: str) -> None:
    """Names of the protocol grammar are accepted unchanged."""
    assert parse_room_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "_a", ".a", "-a", "a b", "a/b", "é", "a\n", "room!"]
)
def test_bad_room_names(name: str) -> None:
    """Names outside the grammar are bad_request."""
    with pytest.raises(ClientError) as info:
        parse_room_name(name)
    assert info.value.code == "bad_request"
