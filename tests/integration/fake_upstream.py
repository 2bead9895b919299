"""A scripted OpenAI-compatible upstream for tests: a real aiohttp app on 127.0.0.1 port 0.

It streams what a script says with realistic timing and splits its writes at awkward bytes
(mid-line, mid-CRLF, mid UTF-8 sequence), and it records every request and disconnect.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Chunk = dict[str, Any] | str


def chunk(
    content: str | None = None, *, index: int = 0, finish: str | None = None, **delta: Any
) -> dict[str, Any]:
    """An OpenAI chat.completion.chunk with one choice."""
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1763740000,
        "model": "fake-model",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(prompt: int = 10, completion: int = 20) -> dict[str, Any]:
    """The trailing usage chunk, with empty choices."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1763740000,
        "model": "fake-model",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def text_stream(pieces: list[str], finish: str = "stop", usage: bool = True) -> list[Chunk]:
    """A plain answer: role chunk, content pieces, finish chunk, usage, [DONE]."""
    out: list[Chunk] = [chunk(role="assistant", content="")]
    out += [chunk(p) for p in pieces]
    out.append(chunk(finish=finish))
    if usage:
        out.append(usage_chunk())
    out.append("data: [DONE]\n\n")
    return out


ANSWER = ["Hello", ",", " wörld", "!", " Café", " naïve", " 🚀", " déjà", " vu", "."]


@dataclass
class Script:
    """What the fake upstream answers to one request."""

    chunks: list[Chunk] = field(default_factory=lambda: text_stream(ANSWER))
    status: int = 200
    error_body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    gap: float = 0.004  # seconds between writes
    split: bool = True  # cut writes at awkward byte positions
    hang: bool = False  # after the chunks, keep the connection open and silent
    reset: bool = False  # after the chunks, drop the connection without ending the body


def _encode(item: Chunk) -> bytes:
    if isinstance(item, str):
        return item.encode()
    return f"data: {json.dumps(item, ensure_ascii=False)}\n\n".encode()


def awkward_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """Split ``data`` into 1-24 byte pieces, always cutting inside the first multi-byte char."""
    cuts: set[int] = set()
    for i, byte in enumerate(data):
        if byte >= 0xC0:  # a UTF-8 lead byte: cut right after it, mid-character
            cuts.add(i + 1)
            break
    pos = 0
    while pos < len(data):
        pos += rng.randint(1, 24)
        cuts.add(pos)
    edges = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


class FakeUpstream:
    """The fake upstream server; ``script_for`` picks the answer to each request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        self.disconnected = asyncio.Event()
        self.finished = asyncio.Event()
        self.completed = 0
        self.script_for: Callable[[dict[str, Any]], Script] = lambda _body: Script()
        self.started = asyncio.Event()
        self.release = asyncio.Event()  # scripts with hold=True wait for this
        self.release.set()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    def always(self, script: Script) -> None:
        """Answer every request with ``script``."""
        self.script_for = lambda _body: script

    async def start(self) -> str:
        """Listen on 127.0.0.1 port 0; return the base URL with /v1."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        # The Responses endpoint answers from the same scripts: a test scripts its events.
        app.router.add_post("/v1/responses", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def close(self) -> None:
        """Stop the server."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "fake-model", "object": "model", "created": 0, "owned_by": "tests"}
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """Answer one create request (either API) from its script; record the request."""
        body = await request.json()
        body["_headers"] = {k.lower(): v for k, v in request.headers.items()}
        body["_path"] = request.path
        self.requests.append(body)
        self.started.set()
        script = self.script_for(body)
        if script.status != 200:
            return web.json_response(
                script.error_body or {}, status=script.status, headers=script.headers
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **script.headers})
        await resp.prepare(request)
        rng = random.Random(len(self.requests))
        try:
            for item in script.chunks:
                data = _encode(item)
                pieces = awkward_pieces(data, rng) if script.split else [data]
                for piece in pieces:
                    await resp.write(piece)
                    await asyncio.sleep(script.gap / len(pieces) if script.gap else 0)
                await self.release.wait()
            if script.hang:
                await asyncio.sleep(3600)
            if script.reset and request.transport is not None:
                request.transport.abort()
                return resp
            await resp.write_eof()
            self.completed += 1
            self.finished.set()
        except ConnectionResetError:  # the client left: nothing more to write
            self._left()
        except asyncio.CancelledError:
            self._left()
            raise
        return resp

    def _left(self) -> None:
        self.disconnects += 1
        self.disconnected.set()
