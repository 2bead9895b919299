"""Which upstream failures are retried, and when (the failure matrix)."""

from __future__ import annotations

import pytest

from server.core.retry import RetryPolicy, is_temporary, retry_delay

POLICY = RetryPolicy(max_retries=2, base_seconds=0.5, max_wait_seconds=10.0)


@pytest.mark.parametrize(
    ("status", "code", "attempt", "retry_after_ms", "delay"),
    [
        (400, "invalid_request_error", 1, None, None),
        (401, "invalid_api_key", 1, None, None),
        (403, "forbidden", 1, None, None),
        (404, "model_not_found", 1, None, None),
        (422, "x", 1, None, None),
        (429, "insufficient_quota", 1, None, None),
        (429, "rate_limit_exceeded", 1, 1500, 1.5),
        (429, "rate_limit_exceeded", 1, None, 0.5),
        (429, "rate_limit_exceeded", 1, 60_000, None),  # longer than we will wait
        (500, "server_error", 1, None, 0.5),
        (503, "x", 2, None, 1.0),
        (503, "x", 3, None, None),  # out of attempts
        (None, "upstream_timeout", 1, None, 0.5),
        (None, "upstream_unreachable", 2, None, 1.0),
        (408, "x", 1, None, 0.5),
        (409, "x", 1, None, 0.5),
        (418, "x", 1, None, None),
    ],
)
def test_retry_delay(
    status: int | None, code: str, attempt: int, retry_after_ms: int | None, delay: float | None
) -> None:
    """The failure matrix: final errors are never retried; temporary ones back off or wait."""
    assert retry_delay(POLICY, attempt, status, code, retry_after_ms) == delay


def test_backoff_is_capped() -> None:
    """Exponential backoff never exceeds the longest wait."""
    policy = RetryPolicy(max_retries=10, base_seconds=1.0, max_wait_seconds=3.0)
    assert [retry_delay(policy, n, 500, "x", None) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("status", "code", "temporary"),
    [
        (429, "rate_limit_exceeded", True),
        (429, "insufficient_quota", False),
        (None, "t", True),
        (502, "x", True),
        (400, "x", False),
        (401, "invalid_api_key", False),
    ],
)
def test_is_temporary(status: int | None, code: str, temporary: bool) -> None:
    """Rate limits, server errors and no answer may pass; bad requests and quota do not."""
    assert is_temporary(status, code) is temporary
