"""The upstream failure matrix, driven by the fake upstream: what is retried, what fails."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from .conftest import ServerFactory, viewer
from .fake_upstream import ANSWER, FakeUpstream, Script

FULL = "".join(ANSWER)


def error(status: int, code: str, **headers: str) -> Script:
    """An upstream HTTP error in OpenAI's shape."""
    body = {
        "error": {"message": f"upstream said {status}", "type": "x", "param": None, "code": code}
    }
    return Script(status=status, error_body=body, headers=headers)


def sequence(upstream: FakeUpstream, *scripts: Script) -> None:
    """Answer the n-th request with the n-th script (the last one after that)."""

    def pick(_body: dict[str, Any]) -> Script:
        return scripts[min(len(upstream.requests), len(scripts)) - 1]

    upstream.script_for = pick


@pytest.mark.parametrize(
    ("first", "requests"),
    [
        (error(500, "server_error"), 2),
        (error(502, "bad_gateway"), 2),
        (error(429, "rate_limit_exceeded", **{"retry-after": "0.1"}), 2),
        (error(429, "rate_limit_exceeded"), 2),
    ],
)
async def test_temporary_failures_before_the_body_are_retried(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    first: Script,
    requests: int,
) -> None:
    """5xx and 429 before the first byte are retried; the turn then completes normally."""
    server = await make_server(upstream__max_retries=2)
    sequence(upstream, first, Script())
    v = await viewer(session, server, "retry")
    await v.send({"type": "prompt", "content": "hi"})
    turn = await v.wait_turn_end()
    assert turn.status == "completed"
    assert turn.text() == FULL
    assert len(upstream.requests) == requests
    assert v.problems == []
    await v.close()


@pytest.mark.parametrize(
    ("script", "code"),
    [
        (error(400, "invalid_request_error"), "invalid_request_error"),
        (error(401, "invalid_api_key"), "invalid_api_key"),
        (error(403, "forbidden"), "forbidden"),
        (error(404, "model_not_found"), "model_not_found"),
        (error(429, "insufficient_quota"), "insufficient_quota"),
    ],
)
async def test_final_failures_are_not_retried(
    make_server: ServerFactory,
    upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    script: Script,
    code: str,
) -> None:
    """400/401/403/404 and insufficient quota fail at once, not temporary, one request."""
    server = await make_server(upstream__max_retries=3)
    upstream.always(script)
    v = await viewer(session, server, "final")
    await v.send({"type": "prompt", "content": "hi"})
    turn = await v.wait_turn_end()
    assert turn.status == "failed"
    assert turn.end is not None
    assert turn.end["error"] == {"code": code, "message": script.error_body["error"]["message"]}  # type: ignore[index]
    assert len(upstream.requests) == 1
    await v.close()


async def test_rate_limit_that_persists_fails_temporary_with_retry_after(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A 429 that lasts past the retries fails with temporary and retry_after_ms."""
    server = await make_server(upstream__max_retries=1)
    upstream.always(error(429, "rate_limit_exceeded", **{"retry-after": "0.05"}))
    v = await viewer(session, server, "rl")
    await v.send({"type": "prompt", "content": "hi"})
    turn = await v.wait_turn_end()
    assert turn.end is not None
    assert turn.end["error"]["temporary"] is True
    assert turn.end["error"]["retry_after_ms"] == 50
    assert len(upstream.requests) == 2
    await v.close()


async def test_a_retry_after_longer_than_the_bound_is_not_waited_for(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Retry-After beyond the longest wait fails now, telling clients when to come back."""
    server = await make_server(upstream__max_retries=3)
    upstream.always(error(429, "rate_limit_exceeded", **{"retry-after": "120"}))
    v = await viewer(session, server, "long")
    await v.send({"type": "prompt", "content": "hi"})
    turn = await v.wait_turn_end()
    assert turn.end is not None
    assert turn.end["error"]["retry_after_ms"] == 120_000
    assert len(upstream.requests) == 1
    await v.close()


async def test_silence_before_the_body_is_retried_then_fails(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """A timeout before the first byte is retried; when it persists the turn fails, temporary."""
    server = await make_server(upstream__max_retries=1, upstream__idle_timeout=0.2)
    upstream.always(Script(chunks=[], hang=True))
    v = await viewer(session, server, "quiet")
    await v.send({"type": "prompt", "content": "hi"})
    turn = await v.wait_turn_end()
    assert turn.end is not None
    assert turn.end["error"]["code"] == "upstream_timeout"
    assert turn.end["error"]["temporary"] is True
    assert len(upstream.requests) == 2
    await v.close()


async def test_a_stream_that_broke_is_never_retried(
    make_server: ServerFactory, upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    """Once the body began, a reset truncates the turn with its text and starts no second stream."""
    server = await make_server(upstream__max_retries=3)
    script = Script()
    script.chunks = script.chunks[:5]
    script.reset = True
    upstream.always(script)
    v = await viewer(session, server, "reset")
    await v.send({"type": "prompt", "content": "hi"})
    turn = await v.wait_turn_end()
    assert turn.status == "truncated"
    assert turn.text() == "".join(ANSWER[:4])
    assert len(upstream.requests) == 1
    await v.close()
