"""What both APIs of the mock upstream share: settings, counters, errors, auth and pacing.

Chat completions (``mock_upstream``) and Responses (``mock_responses``) read the same
settings, count into the same ``MockStats``, refuse the same keys and fail the same way for
``mock-429`` and ``mock-500``, so a scenario behaves alike whichever API a client speaks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiohttp import web

from server.tools.mock_scenarios import is_unpaced

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class MockSettings:
    """How fast the mock answers, whether it wants an API key, and what it keeps.

    ``stored_responses`` and ``stored_seconds`` bound the Responses the mock keeps for
    retrieval: beyond the count the oldest go first, and a finished one goes after that many
    seconds.
    """

    tokens_per_second: float = 40.0
    ttft: float = 0.3
    api_key: str | None = None
    stored_responses: int = 256
    stored_seconds: float = 600.0


@dataclass(slots=True)
class MockStats:
    """What the mock has seen, for tests and load tests.

    ``requests`` counts chat completions requests only (load tests compare it with the
    prompts they sent); the ``responses_*`` fields count the Responses endpoints, and
    ``last_starting_after`` is the last ``starting_after`` a retrieval asked for. Every
    request counts, refused ones included. ``last_request`` is the last JSON object body that
    either create endpoint received.
    """

    requests: int = 0
    disconnects: int = 0
    last_request: dict[str, object] | None = None
    models_requests: int = 0
    responses_creates: int = 0
    responses_retrieves: int = 0
    responses_cancels: int = 0
    last_starting_after: int | None = None

    def counts(self) -> dict[str, int | None]:
        """The counters, as ``GET /v1/_stats`` reports them."""
        return {
            "requests": self.requests,
            "disconnects": self.disconnects,
            "models_requests": self.models_requests,
            "responses_creates": self.responses_creates,
            "responses_retrieves": self.responses_retrieves,
            "responses_cancels": self.responses_cancels,
            "last_starting_after": self.last_starting_after,
        }


MOCK_STATS = web.AppKey("mock_stats", MockStats)
MOCK_SETTINGS = web.AppKey("mock_settings", MockSettings)


def error_response(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-style error response."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def bad_request(message: str) -> web.Response:
    """A 400 ``invalid_request_error``."""
    return error_response(400, message, "invalid_request_error")


def check_auth(request: web.Request) -> web.Response | None:
    """A 401 when an API key is configured and the request does not carry it."""
    key = request.app[MOCK_SETTINGS].api_key
    if key is None or request.headers.get("Authorization") == f"Bearer {key}":
        return None
    # Never echo the key back: the message may end up in logs.
    return error_response(
        401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"
    )


async def read_json(request: web.Request) -> object:
    """The request's JSON body; ValueError carries the message for a 400."""
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        # Covers both JSONDecodeError and UnicodeDecodeError.
        raise ValueError("We could not parse the JSON body of your request.") from exc


def scenario_failure(model: str) -> web.Response | None:
    """The HTTP error that ``mock-429`` and ``mock-500`` answer with, else None."""
    if model == "mock-429":
        return error_response(
            429,
            "Rate limit reached for requests",
            "requests",
            "rate_limit_exceeded",
            headers={"retry-after": "1"},
        )
    if model == "mock-500":
        return error_response(
            500, "The server had an error processing your request.", "server_error"
        )
    return None


def token_deadline(start: float, settings: MockSettings, model: str, index: int) -> float:
    """When, on the loop clock, token ``index`` of a stream that began at ``start`` is due."""
    tps = 0.0 if is_unpaced(model) else settings.tokens_per_second
    # An absolute schedule, so a slow write delays one token, not all later ones.
    return start + settings.ttft + (index / tps if tps > 0 else 0.0)


async def wait_until(deadline: float) -> None:
    """Sleep until the loop clock reaches ``deadline`` (no-op if it already has)."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


class _ForAModel(Protocol):
    @property
    def model(self) -> str: ...


Parsed = TypeVar("Parsed", bound=_ForAModel)


async def admit(request: web.Request, parse: Callable[[object], Parsed]) -> Parsed | web.Response:
    """The request as ``parse`` reads its JSON body, or the answer that refuses it.

    Checks the API key, keeps the body as ``MockStats.last_request``, and answers
    ``mock-429`` and ``mock-500`` with their HTTP errors.
    """
    denied = check_auth(request)
    if denied is not None:
        return denied
    try:
        body = await read_json(request)
        if isinstance(body, dict):
            request.app[MOCK_STATS].last_request = body
        parsed = parse(body)
    except ValueError as exc:
        return bad_request(str(exc))
    failure = scenario_failure(parsed.model)
    return parsed if failure is None else failure


async def json_answer(request: web.Request, answer: object, model: str) -> web.StreamResponse:
    """A non-streaming answer; ``mock-truncate`` sends half of its JSON, then ends."""
    text = json.dumps(answer, ensure_ascii=False)
    if model != "mock-truncate":
        return web.Response(text=text, content_type="application/json")
    # The non-streaming analogue of a cut stream: half a JSON document, then the end.
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    await resp.write(text[: len(text) // 2].encode())
    return resp
