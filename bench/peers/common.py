"""What every peer shares: its command line, its frames and the upstream stream it relays.

The upstream is read with a plain aiohttp POST and ``json.loads`` per chunk: the cheapest
honest way, which flatters the peers a little next to fanout's SDK and accumulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

ROOM = "bench"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def parse_args(description: str) -> argparse.Namespace:
    """``--host``, ``--port``, ``--upstream-url`` (with /v1) and ``--model``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-url", required=True)
    parser.add_argument("--model", default="mock")
    return parser.parse_args()


class TurnFrames:
    """The frames of one turn, numbered like fanout's sequenced events."""

    def __init__(self, turn: str, seq: int = 0) -> None:
        self.turn = turn
        self.seq = seq

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def start(self, prompt: str, model: str) -> dict[str, Any]:
        """The ``turn.start`` frame."""
        seq = self._next()
        return {
            "type": "turn.start",
            "seq": seq,
            "turn": self.turn,
            "prompt": prompt,
            "model": model,
        }

    def delta(self, text: str) -> dict[str, Any]:
        """A ``delta`` frame carrying one content token."""
        choices = [{"index": 0, "content": text}]
        return {"type": "delta", "seq": self._next(), "turn": self.turn, "choices": choices}

    def end(self, status: str) -> dict[str, Any]:
        """The ``turn.end`` frame."""
        return {"type": "turn.end", "seq": self._next(), "turn": self.turn, "status": status}


def dumps(frame: dict[str, Any]) -> str:
    """Compact JSON, as fanout's codec writes it."""
    return _dumps(frame)


def prompt_of(message: str | bytes) -> tuple[str, str | None] | None:
    """``(content, model)`` of a ``{"type": "prompt"}`` client frame, else None."""
    try:
        frame = json.loads(message)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "prompt":
        return None
    return str(frame.get("content", "")), frame.get("model")


async def upstream_deltas(
    session: aiohttp.ClientSession, base_url: str, model: str, prompt: str
) -> AsyncIterator[str]:
    """One streaming chat completion: yield the text of every content delta."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True}
    async with session.post(f"{base_url}/chat/completions", json=body) as resp:
        resp.raise_for_status()
        rest = b""
        async for data in resp.content.iter_any():
            *events, rest = (rest + data).split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: "):
                    continue
                payload = event[6:]
                if payload == b"[DONE]":
                    return
                for choice in json.loads(payload).get("choices") or ():
                    text = choice.get("delta", {}).get("content")
                    if text:
                        yield text


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
