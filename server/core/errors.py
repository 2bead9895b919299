"""One flat exception family, translated to error frames, HTTP errors or close codes at the edge."""

from __future__ import annotations

from .codes import CloseCode, ErrorCode

# HTTP status for every error code of PROTOCOL.md; the WebSocket uses the code alone.
HTTP_STATUS: dict[str, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TURN_IN_PROGRESS: 409,
    ErrorCode.TURN_ENDED: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UPSTREAM_ERROR: 502,
    ErrorCode.UNAVAILABLE: 503,
}


# The message of an upstream that sent no byte of its body in time.
UPSTREAM_TIMEOUT_MESSAGE = "the upstream did not answer in time"


class FanoutError(Exception):
    """Base of every error this project raises on purpose."""


class ClientError(FanoutError):
    """The client's fault (or a state it must wait out): becomes an error frame or HTTP error."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        ref: str | None = None,
        temporary: bool = False,
        retry_after_ms: int | None = None,
        close_code: CloseCode | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.temporary = temporary
        self.retry_after_ms = retry_after_ms
        self.close_code = close_code  # the close code when it ends a live WebSocket

    @property
    def status(self) -> int:
        """The HTTP status that carries this error."""
        return HTTP_STATUS.get(self.code, 400)


def turn_in_progress(ref: str | None) -> ClientError:
    """A prompt while a turn streams (PROTOCOL.md: temporary; ``ref`` is the prompt's id)."""
    return ClientError(
        ErrorCode.TURN_IN_PROGRESS, "a turn is already streaming", ref=ref, temporary=True
    )


def broker_unavailable(ref: str | None = None) -> ClientError:
    """The broker could not be reached: temporary; a connection is closed with 1013."""
    return ClientError(
        ErrorCode.UNAVAILABLE,
        "the broker is unavailable",
        ref=ref,
        temporary=True,
        close_code=CloseCode.TRY_AGAIN_LATER,
    )


class UpstreamError(FanoutError):
    """The upstream's fault: ends the turn as ``failed`` with a scrubbed code and message."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after_ms: int | None = None,
        payload: object = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_ms = retry_after_ms
        self.payload = payload  # the upstream's error JSON, scrubbed, for the tap to pass on


class BrokerError(FanoutError):
    """A broker backend could not carry an event."""


class ConfigError(FanoutError):
    """The configuration is invalid; the message names the offending key."""
