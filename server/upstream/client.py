"""The upstream client: one request per turn through the openai SDK (chat or Responses API).

The SDK (with its aiohttp transport) makes the request: base URL, auth, retries before the
first byte, HTTP errors. The body's raw bytes go to the sans-I/O SSE decoder and chunk
accumulator, so provider quirks are handled in one place and nothing is parsed twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai

from server.config import UpstreamConfig
from server.core.accumulator import error_info
from server.core.codes import ErrorCode
from server.core.errors import UPSTREAM_TIMEOUT_MESSAGE, UpstreamError
from server.core.messages import ErrorInfo
from server.core.repair import repair_json
from server.core.responses_request import responses_body
from server.core.scrub import scrub
from server.core.types import UpstreamApi

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"


class StreamBroken(UpstreamError):
    """The body broke after it began: the turn is truncated, its text kept."""


class UpstreamStatusError(UpstreamError):
    """The upstream answered an HTTP error; ``repairs``: values of its body made valid."""

    def __init__(
        self,
        info: ErrorInfo,
        *,
        status: int,
        retry_after_ms: int | None,
        payload: object,
        repairs: int,
    ) -> None:
        super().__init__(
            info.code, info.message, status=status, retry_after_ms=retry_after_ms, payload=payload
        )
        self.repairs = repairs


class UpstreamClient:
    """Opens streaming turns against one OpenAI-compatible base URL."""

    def __init__(self, config: UpstreamConfig, base_url: str, api_key: str | None) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")
        self._secrets = tuple(s for s in (api_key,) if s)
        self._client = openai.AsyncOpenAI(
            # Local servers (vLLM, Ollama) take any key; the SDK insists on one.
            api_key=api_key or "no-key",
            base_url=self.base_url,
            # Retries are the turn runner's (core/retry.py): it knows which failures may pass.
            max_retries=0,
            timeout=openai.Timeout(
                config.total_timeout,
                connect=config.connect_timeout,
                read=config.idle_timeout,
            ),
            http_client=openai.DefaultAioHttpClient(),
        )

    async def close(self) -> None:
        """Close the SDK client and its connection pool."""
        await self._client.close()

    def build_body(
        self, messages: list[dict[str, str]], model: str, options: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The request body of a streaming room turn, for the API the upstream speaks.

        Raises:
            ClientError: an option the Responses API lacks (``upstream.api = "responses"``).
        """
        if self.config.api == "responses":
            return responses_body(messages, model, options, background=self.config.background)
        body: dict[str, Any] = dict(options or {})
        body.update(model=model, messages=messages, stream=True)
        if self.config.include_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    @asynccontextmanager
    async def stream(
        self, body: dict[str, Any], api: UpstreamApi = "chat"
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open the stream and yield its raw body bytes.

        Leaving the context closes the HTTP response; an unfinished body closes its
        connection, so a cancelled turn really stops the upstream.

        Args:
            body: the request body: chat ``messages`` or Responses ``input``.
            api: which API: ``POST /chat/completions`` or ``POST /responses``.

        Raises:
            UpstreamError: the request failed before the body (HTTP error, timeout, refused).
            StreamBroken: the body broke after it began.
        """
        # Everything but the fields the SDK insists on goes through as extra_body, so
        # provider-specific fields of a tap request reach the upstream unchanged.
        if api == "responses":
            rest = {k: v for k, v in body.items() if k not in ("model", "input", "stream")}
            manager: Any = self._client.responses.with_streaming_response.create(
                model=body["model"], input=body["input"], stream=True, extra_body=rest
            )
        else:
            rest = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
            manager = self._client.chat.completions.with_streaming_response.create(
                model=body["model"], messages=body["messages"], stream=True, extra_body=rest
            )
        async with self._opened(manager) as chunks:
            yield chunks

    @asynccontextmanager
    async def reattach(
        self, response_id: str, starting_after: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a background response again, from the event after ``starting_after``.

        Raises:
            UpstreamError: the response is gone or cannot be streamed (HTTP error), or the
                upstream could not be reached.
            StreamBroken: the body broke after it began.
        """
        manager = self._client.responses.with_streaming_response.retrieve(
            response_id, stream=True, starting_after=starting_after
        )
        async with self._opened(manager) as chunks:
            yield chunks

    async def cancel_response(self, response_id: str) -> bool:
        """Cancel a background response; False when the upstream refused or was not reached."""
        try:
            await self._client.responses.cancel(response_id)
        except openai.APIError as exc:
            log.info("upstream response not cancelled: %s", type(exc).__name__)
            return False
        return True

    @asynccontextmanager
    async def _opened(self, manager: Any) -> AsyncIterator[AsyncIterator[bytes]]:
        """Enter an SDK streaming-response manager; yield its raw body bytes."""
        try:
            response = await manager.__aenter__()
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except openai.APITimeoutError as exc:
            # The SDK's aiohttp transport reports a refused connection as a connect timeout.
            if _caused_by(exc, aiohttp.ClientConnectorError):
                raise UpstreamError(
                    ErrorCode.UPSTREAM_UNREACHABLE, "could not reach the upstream"
                ) from exc
            raise UpstreamError(ErrorCode.UPSTREAM_TIMEOUT, UPSTREAM_TIMEOUT_MESSAGE) from exc
        except openai.APIConnectionError as exc:
            raise UpstreamError(
                ErrorCode.UPSTREAM_UNREACHABLE, "could not reach the upstream"
            ) from exc
        try:
            yield self._body(response.iter_bytes())
        finally:
            await manager.__aexit__(None, None, None)

    async def _body(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        except (openai.APIError, OSError) as exc:
            log.info("upstream body broke: %s", type(exc).__name__)
            raise StreamBroken(ErrorCode.STREAM_BROKEN, "the upstream stream broke") from exc
        except Exception as exc:
            # httpx-style read errors surface under their own names; all mean the same here.
            if type(exc).__module__.split(".")[0] in ("httpx2", "httpx", "aiohttp"):
                raise StreamBroken(ErrorCode.STREAM_BROKEN, "the upstream stream broke") from exc
            raise

    def _status_error(self, exc: openai.APIStatusError) -> UpstreamStatusError:
        # The body is the upstream's JSON as the SDK parsed it: repaired like any chunk
        # (core/repair.py), so its message and the payload the tap passes on are valid text.
        body, repairs = repair_json(exc.body)
        raw = body.get("error", body) if isinstance(body, dict) else None
        if isinstance(raw, dict):
            info = error_info(raw, self._secrets)
        else:
            info = error_info(
                {"code": ErrorCode.UPSTREAM_ERROR, "message": str(exc.message)}, self._secrets
            )
        retry_ms = _retry_after_ms(exc.response.headers.get("retry-after"))
        log.warning(
            "upstream answered HTTP %s (%s)", exc.status_code, scrub(info.code, self._secrets)
        )
        payload = body if isinstance(body, dict) else {"error": {"message": info.message}}
        return UpstreamStatusError(
            info,
            status=exc.status_code,
            retry_after_ms=retry_ms,
            payload={"error": _scrubbed(payload.get("error", payload), self._secrets)},
            repairs=repairs,
        )

    async def models(self) -> tuple[int, bytes]:
        """The upstream's ``GET /models`` answer: status and raw JSON body.

        Raises:
            UpstreamError: the upstream could not be reached or answered an error.
        """
        try:
            raw = await self._client.models.with_raw_response.list()
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        except openai.APIError as exc:
            raise UpstreamError(
                ErrorCode.UPSTREAM_UNREACHABLE, "could not reach the upstream"
            ) from exc
        return raw.http_response.status_code, raw.http_response.content


def _retry_after_ms(value: str | None) -> int | None:
    """A Retry-After header in seconds as milliseconds; None when absent or not a duration."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date, or garbage
    if not math.isfinite(seconds) or seconds < 0:
        return None  # "inf" or "nan" would break int(); a negative wait is no wait
    return int(min(seconds, 86_400.0) * 1000)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """True when ``kind`` is anywhere in the chain of causes of ``exc``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _scrubbed(value: object, secrets: tuple[str, ...]) -> object:
    """A JSON value with every string scrubbed of secrets."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {str(k): _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v, secrets) for v in value]
    return value
