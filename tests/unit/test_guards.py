"""Origins, token buckets and role rules: the pure parts of hardening."""

from __future__ import annotations

import pytest

from server.core.auth_rules import Claims, authorize, claims_from
from server.core.errors import ClientError
from server.core.origins import normalize_origin, origin_allowed
from server.core.ratelimit import RateLimiter, TokenBucket


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://Example.COM", "http://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80/", "http://example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("ws://h:81", "ws://h:81"),
        ("null", None),
        ("ftp://example.com", None),
        ("http://", None),
        ("http://example.com/path", None),
        ("http://example.com:99999", None),
    ],
)
def test_normalize_origin(value: str, expected: str | None) -> None:
    """Origins compare as scheme://host[:port], lower case, default ports dropped."""
    assert normalize_origin(value) == expected


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        (None, [], True),
        ("http://127.0.0.1:8080", [], True),
        ("http://evil.example", [], False),
        ("http://evil.example", ["https://app.example"], False),
        ("https://app.example:443", ["https://app.example"], True),
        ("null", [], False),
    ],
)
def test_origin_allowed(origin: str | None, allowed: list[str], ok: bool) -> None:
    """No Origin passes; the server's own and listed origins pass; others fail."""
    assert origin_allowed(origin, "http://127.0.0.1:8080", allowed) is ok


def test_token_bucket_allows_a_burst_then_refills() -> None:
    """A burst of 5 passes at once, the 6th waits 2 s at 30 a minute, then one more passes."""
    bucket = TokenBucket(per_minute=30, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [None] * 5
    assert bucket.take(0.0) == pytest.approx(2.0)
    assert bucket.take(1.0) == pytest.approx(1.0)
    assert bucket.take(2.0) is None
    assert TokenBucket(per_minute=60, burst=0, now=0.0).burst == 1


def test_rate_limiter_keys_and_unlimited() -> None:
    """Each key has its own bucket; the oldest key is forgotten past the cap; 0 is unlimited."""
    limiter = RateLimiter(per_minute=60, burst=1, max_keys=2)
    assert limiter.take("a", 0.0) is None
    assert limiter.take("a", 0.0) == pytest.approx(1.0)
    assert limiter.take("b", 0.0) is None
    assert limiter.take("a", 0.5) == pytest.approx(0.5)  # touches a: b is now the oldest
    assert limiter.take("c", 0.5) is None  # evicts b
    assert limiter.take("b", 0.5) is None  # a fresh bucket for b (evicting a)
    assert limiter.take("a", 0.5) is None
    free = RateLimiter(per_minute=0, burst=1)
    assert all(free.take("x", 0.0) is None for _ in range(100))


GOOD = {"room": "demo", "role": "publisher", "exp": 10, "sub": "u1"}


@pytest.mark.parametrize(
    "payload",
    [
        {**GOOD, "room": None},
        {**GOOD, "room": "-bad"},
        {**GOOD, "role": "owner"},
        {**GOOD, "exp": None},
        {**GOOD, "exp": True},
        {**GOOD, "sub": 3},
    ],
)
def test_claims_with_a_bad_claim_are_unauthorized(payload: dict[str, object]) -> None:
    """Every claim is required and typed; a wrong one is unauthorized."""
    with pytest.raises(ClientError) as caught:
        claims_from(payload)
    assert caught.value.code == "unauthorized"


def test_claims_from_a_good_payload() -> None:
    """A good payload becomes Claims; '*' is a valid room."""
    assert claims_from(GOOD) == Claims("demo", "publisher", 10.0, "u1")
    assert claims_from({**GOOD, "room": "*"}).room == "*"


@pytest.mark.parametrize(
    ("room", "role", "target", "action", "error"),
    [
        ("demo", "viewer", "demo", "view", None),
        ("demo", "viewer", "demo", "prompt", "forbidden"),
        ("demo", "publisher", "demo", "prompt", None),
        ("demo", "publisher", "other", "view", "forbidden"),
        ("*", "publisher", "other", "prompt", None),
        ("*", "viewer", "other", "prompt", "forbidden"),
        ("demo", "admin", "other", "prompt", None),
        ("demo", "publisher", None, "prompt", None),
        ("demo", "viewer", None, "view", None),
        ("demo", "viewer", None, "prompt", "forbidden"),
    ],
)
def test_authorize(
    room: str, role: str, target: str | None, action: str, error: str | None
) -> None:
    """Tokens allow their room (or every room with '*'); viewers watch; admins do anything.

    Without a room only the role counts.
    """
    claims = Claims(room, role, 10.0, "u")  # type: ignore[arg-type]
    if error is None:
        authorize(claims, target, action)  # type: ignore[arg-type]
    else:
        with pytest.raises(ClientError) as caught:
            authorize(claims, target, action)  # type: ignore[arg-type]
        assert caught.value.code == error
