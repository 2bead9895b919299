"""Logging: plain or JSON lines, and an access log that never writes query strings.

Query strings can carry tokens (``?token=``); request and message bodies are never logged.
"""

from __future__ import annotations

import json
import logging
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse


class AccessLog(AbstractAccessLogger):
    """One line per request: address, method, path (no query), status, size, duration."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write the line."""
        self.logger.info(
            "%s %s %s %s %s %.3fs",
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )


class ParserRefusals(logging.Filter):
    """Requests aiohttp's parser refuses become one INFO line each, without a traceback.

    A malformed request line, a control byte in a header or a line over the parser's limit is
    answered 400 by aiohttp before any route sees it; aiohttp logs that at ERROR with the
    parser's traceback, which lets anyone fill the log with tracebacks. The line kept says who
    and why (the reason's first line, never the request's bytes).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a parser refusal in place; pass every other record as it is."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            reason = (exc.message or "").strip().splitlines()[:1] or [type(exc).__name__]
            record.msg = "refused a malformed request from %s (%s): %s"
            who = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (who, exc.code, reason[0].partition(":")[0][:120])
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_parser_refusals() -> None:
    """Install :class:`ParserRefusals` on aiohttp's server logger, once."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParserRefusals) for f in logger.filters):
        logger.addFilter(ParserRefusals())


class JsonLines(logging.Formatter):
    """Each record as one JSON object: time, level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        out = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger: ``fmt`` is ``text`` or ``json``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDK's HTTP client logs every request at INFO; the turn log lines already say it.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
