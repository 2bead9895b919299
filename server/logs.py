"""Logging: plain or JSON lines, and an access log that never writes query strings.

Query strings can carry tokens (``?token=``); request and message bodies are never logged.
"""

from __future__ import annotations

import json
import logging
import time

from aiohttp.abc import AbstractAccessLogger
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
