"""aioresponses on aiohttp 3.14: mocked responses built the way this aiohttp wants them.

aioresponses 0.7.9 builds each mocked ``ClientResponse`` with ``writer=None`` and no
``stream_writer``; aiohttp 3.14's ``ClientResponse.__init__`` requires ``stream_writer``
(keyword-only) and, when ``writer`` is None, reads ``stream_writer.output_size``. So every
mocked request fails with a TypeError before the code under test sees a response.

The shim's response class supplies an inert stream writer (nothing was uploaded: output
size 0) when aiohttp asks for one, and ``MockUpstream`` uses it for every mock it adds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from re import Pattern
from typing import Any

from aiohttp import ClientResponse, hdrs
from aioresponses import aioresponses
from multidict import CIMultiDict
from yarl import URL

_NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(ClientResponse.__init__).parameters


class _SentRequest:
    """Stands in for the stream writer of a request that was already sent."""

    output_size = 0


class MockedClientResponse(ClientResponse):
    """A ClientResponse that aioresponses can build on aiohttp 3.14 and older."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", _SentRequest())
        super().__init__(method, url, **kwargs)


class MockUpstream(aioresponses):
    """``aioresponses`` whose mocks default to ``MockedClientResponse``.

    A ``callback`` that returns its own ``CallbackResult`` must pass
    ``response_class=MockedClientResponse`` itself.
    """

    def add(
        self,
        url: URL | str | Pattern[Any],
        method: str = hdrs.METH_GET,
        status: int = 200,
        body: str | bytes = "",
        exception: Exception | None = None,
        content_type: str = "application/json",
        payload: dict[Any, Any] | None = None,
        headers: CIMultiDict[Any] | dict[Any, Any] | None = None,
        response_class: type[ClientResponse] | None = None,
        repeat: bool | int = False,
        timeout: bool = False,
        reason: str | None = None,
        callback: Callable[..., Any] | None = None,
    ) -> None:
        """Add a mock, as ``aioresponses.add``, with the compatible response class."""
        super().add(
            url,
            method,
            status,
            body,
            exception,
            content_type,
            payload,
            headers,
            response_class or MockedClientResponse,
            repeat,
            timeout,
            reason,
            callback,
        )
