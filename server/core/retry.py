"""Which upstream failures are worth another attempt, and after how long.

Only failures before the response body count: once a turn has a byte of body it is never
retried (a second stream would be a second answer). 400, 401, 403, 404 and 422 are the
request's or the key's fault; ``insufficient_quota`` will not pass by waiting; 408, 409, 429,
5xx, timeouts and refused connections may.
"""

from __future__ import annotations

from dataclasses import dataclass

NEVER_RETRIED = frozenset({400, 401, 403, 404, 422})
FINAL_CODES = frozenset({"insufficient_quota", "invalid_api_key", "model_not_found"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many more attempts, the backoff, and the longest Retry-After honoured."""

    max_retries: int = 2
    base_seconds: float = 0.5
    max_wait_seconds: float = 10.0


def is_temporary(status: int | None, code: str) -> bool:
    """True for a failure that may pass: rate limits, server errors, timeouts, refusals."""
    if code in FINAL_CODES or status in NEVER_RETRIED:
        return False
    return status is None or status in (408, 409, 429) or status >= 500


def retry_delay(
    policy: RetryPolicy, attempt: int, status: int | None, code: str, retry_after_ms: int | None
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None to give up now.

    Args:
        policy: how many retries, and the base and longest waits.
        attempt: how many attempts were made already (1 after the first).
        status: the HTTP status, or None when no response came (timeout, refused).
        code: the error code of the failed attempt (some are final whatever the status).
        retry_after_ms: the upstream's Retry-After, when it sent one.
    """
    if attempt > policy.max_retries or not is_temporary(status, code):
        return None
    if retry_after_ms is not None:
        wait = retry_after_ms / 1000
        return wait if wait <= policy.max_wait_seconds else None
    backoff: float = policy.base_seconds * 2.0 ** (attempt - 1)
    return min(backoff, policy.max_wait_seconds)
