"""The protocol's vocabulary: the enums hold exactly PROTOCOL.md's close and error codes."""

from __future__ import annotations

import pytest

from server.core.codec import dump_json, encode
from server.core.codes import CloseCode, ErrorCode
from server.core.errors import HTTP_STATUS, broker_unavailable
from server.core.messages import ErrorFrame

# PROTOCOL.md, "Close codes" table, and "Defaults and details" (binary frames 1003, invalid
# UTF-8 1007), copied by hand: a code added to or dropped from either side fails here.
PROTOCOL_CLOSE_CODES = {
    1000: "normal",
    1001: "server shutting down",
    1003: "binary frame",
    1007: "invalid UTF-8",
    1009: "frame too large",
    1011: "internal error",
    1013: "server at capacity",
    4000: "slow consumer",
    4001: "rate limited",
    4500: "unauthorized",
    4501: "forbidden",
    4502: "too many bad frames",
    4503: "limit reached",
}

# PROTOCOL.md's HTTP error table (and the cancel endpoint's 409 turn_ended), with statuses.
PROTOCOL_ERROR_CODES = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "turn_in_progress": 409,
    "turn_ended": 409,
    "too_large": 413,
    "rate_limited": 429,
    "upstream_error": 502,
    "unavailable": 503,
}

# The codes this server adds (docs/protocol.md): turn.end errors and the HTTP 500.
SERVER_ERROR_CODES = {
    "internal_error",
    "upstream_timeout",
    "upstream_unreachable",
    "stream_broken",
    "bad_chunk",
}


def test_close_codes_are_protocol_md_s() -> None:
    """Every close code PROTOCOL.md names is a CloseCode, and CloseCode has no other."""
    assert {int(code) for code in CloseCode} == set(PROTOCOL_CLOSE_CODES)


def test_error_codes_are_protocol_md_s_and_the_server_s() -> None:
    """Every error code of PROTOCOL.md is an ErrorCode; the others are the server's own."""
    values = {str(code) for code in ErrorCode}
    assert set(PROTOCOL_ERROR_CODES) <= values
    assert values - set(PROTOCOL_ERROR_CODES) == SERVER_ERROR_CODES


def test_http_status_table_is_protocol_md_s() -> None:
    """The HTTP status of every protocol error code is the one PROTOCOL.md gives it."""
    assert dict(HTTP_STATUS) == PROTOCOL_ERROR_CODES


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_code_encodes_as_its_string(code: ErrorCode) -> None:
    """An ErrorCode member is written on the wire exactly as its literal string was."""
    assert dump_json({"code": code}) == dump_json({"code": code.value})
    assert str(code) == f"{code}" == code.value


def test_error_frame_with_an_enum_is_byte_identical() -> None:
    """An error frame built from an ErrorCode encodes as one built from the string."""
    frame = ErrorFrame(ErrorCode.TURN_IN_PROGRESS, "busy", True, None, "p-1")
    plain = ErrorFrame("turn_in_progress", "busy", True, None, "p-1")
    assert encode(frame) == encode(plain)


@pytest.mark.parametrize("code", list(CloseCode))
def test_close_code_is_its_number(code: CloseCode) -> None:
    """A CloseCode member is its number, in comparisons and in text."""
    assert code == code.value
    assert f"{code}" == str(code.value)


def test_client_error_takes_the_enums() -> None:
    """ClientError keeps the enum members it is given and maps them to their status."""
    err = broker_unavailable("r")
    assert err.code is ErrorCode.UNAVAILABLE
    assert err.close_code is CloseCode.TRY_AGAIN_LATER
    assert err.status == 503
