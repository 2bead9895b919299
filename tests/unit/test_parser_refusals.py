"""ParserRefusals: a request aiohttp's parser refuses is one INFO line, no traceback."""

from __future__ import annotations

import logging
import sys

from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong

from server.http.logs import ParserRefusals, quiet_parser_refusals


def _record(exc: BaseException | None, level: int = logging.ERROR) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(
        "aiohttp.server", level, __file__, 1, "Error handling request from %s", ("10.0.0.9",), info
    )


def test_a_parser_refusal_becomes_one_info_line_without_the_request_bytes() -> None:
    record = _record(BadHttpMessage("Invalid header value char:\n\n  b'X: \\x01'\n"))
    assert ParserRefusals().filter(record)
    assert record.levelno == logging.INFO
    assert record.levelname == "INFO"
    assert record.exc_info is None
    assert record.exc_text is None
    assert record.getMessage() == (
        "refused a malformed request from 10.0.0.9 (400): Invalid header value char"
    )


def test_a_long_line_says_why_but_not_what() -> None:
    record = _record(LineTooLong(b"9" * 9000, 8190))
    ParserRefusals().filter(record)
    message = record.getMessage()
    assert message.startswith("refused a malformed request from 10.0.0.9 (400): Got more than")
    assert "999" not in message


def test_other_records_pass_unchanged() -> None:
    try:
        raise RuntimeError("a real bug")
    except RuntimeError:
        info = sys.exc_info()
    bug = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "boom", (), info)
    plain = _record(None)
    server_side = _record(HttpProcessingError(code=500, message="x"))
    for record in (bug, plain, server_side):
        assert ParserRefusals().filter(record)
        assert record.levelno == logging.ERROR
    assert bug.exc_info is info


def test_installed_once() -> None:
    quiet_parser_refusals()
    quiet_parser_refusals()
    filters = logging.getLogger("aiohttp.server").filters
    assert sum(isinstance(f, ParserRefusals) for f in filters) == 1
