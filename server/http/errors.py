"""HTTP errors as PROTOCOL.md's JSON: ``{"error": {"code", "message"}}`` with a fitting status."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from server.core.codes import ErrorCode
from server.core.errors import ClientError
from server.http.keys import METRICS

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP exceptions (unknown route, wrong method...) mapped to protocol codes.
_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.BAD_REQUEST,
    413: ErrorCode.TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}


def error_response(status: int, code: str, message: str) -> web.Response:
    """One JSON error response."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def client_error_response(exc: ClientError) -> web.Response:
    """A ClientError as its JSON response."""
    response = error_response(exc.status, exc.code, exc.message)
    if exc.retry_after_ms is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after_ms / 1000)))
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ClientError and aiohttp's HTTP errors into JSON; never leak a traceback."""
    try:
        return await handler(request)
    except ClientError as exc:
        log.info("%s %s -> %s %s", request.method, request.path, exc.status, exc.code)
        request.app[METRICS].errors.labels(exc.code).inc()
        return client_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(
            exc.status, ErrorCode.BAD_REQUEST if exc.status < 500 else ErrorCode.UNAVAILABLE
        )
        return error_response(exc.status, code, exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, ErrorCode.INTERNAL_ERROR, "internal server error")
