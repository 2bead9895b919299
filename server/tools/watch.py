"""``fanout watch``: a terminal viewer of a room, and the quickest way to try the server."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

import aiohttp

from server.core.codes import CloseCode


def _room_url(url: str, room: str) -> str:
    base = url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return f"{base}/api/rooms/{room}/ws"


def _end_line(frame: dict[str, Any]) -> str:
    parts = [frame["status"]]
    reasons = {c["finish_reason"] for c in frame["choices"] if c["finish_reason"]}
    if reasons and reasons != {"stop"}:
        parts.append("finish: " + ", ".join(sorted(reasons)))
    usage = frame.get("usage") or {}
    if "total_tokens" in usage:
        parts.append(f"{usage['total_tokens']} tokens")
    if frame.get("error"):
        parts.append(f"error {frame['error']['code']}: {frame['error']['message']}")
    return "[" + " · ".join(parts) + "]"


async def watch(
    url: str,
    room: str,
    *,
    prompt: str | None = None,
    model: str | None = None,
    turns: int = 0,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print a room's turns as they stream; with ``prompt``, send it and stop when it ends.

    Returns:
        0, or 1 when the server refused the prompt or the connection closed abnormally.
    """
    ended = 0
    mine: str | None = None
    async with aiohttp.ClientSession() as session, session.ws_connect(_room_url(url, room)) as ws:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            kind = frame["type"]
            if kind == "welcome":
                print(
                    f"connected to room {frame['room']} ({frame['viewers']} viewer(s), "
                    f"seq {frame['seq']})",
                    file=err,
                )
            elif kind == "snapshot" and prompt is not None:
                body: dict[str, Any] = {"type": "prompt", "content": prompt, "id": "watch-1"}
                if model:
                    body["model"] = model
                await ws.send_str(json.dumps(body))
            elif kind == "turn.start":
                mine = frame["turn"] if prompt is not None and mine is None else mine
                print(f"\n> {frame['prompt']}", file=out, flush=True)
            elif kind == "delta":
                for choice in frame["choices"]:
                    if choice["index"] == 0:
                        text = choice.get("content", "") or choice.get("refusal", "")
                        print(text, end="", file=out, flush=True)
                        for call in choice.get("tool_calls", []):
                            if "name" in call:
                                print(f"\n[tool call {call['name']}] ", end="", file=out)
                            print(call.get("arguments", ""), end="", file=out, flush=True)
            elif kind == "turn.end":
                print(f"\n{_end_line(frame)}", file=out, flush=True)
                ended += 1
                if (mine is not None and frame["turn"] == mine) or (turns and ended >= turns):
                    return 0
            elif kind == "error":
                print(f"error {frame['code']}: {frame['message']}", file=err)
                if frame.get("ref") == "watch-1":
                    return 1
        code = ws.close_code
    if code not in (None, CloseCode.NORMAL):
        print(f"connection closed with {code}", file=err)
        return 1
    return 0


def run_watch(url: str, room: str, prompt: str | None, model: str | None, turns: int) -> int:
    """Blocking wrapper for the CLI; Ctrl-C stops it quietly."""
    try:
        return asyncio.run(watch(url, room, prompt=prompt, model=model, turns=turns))
    except KeyboardInterrupt:
        return 0
    except aiohttp.ClientError as exc:
        print(f"fanout watch: {exc}", file=sys.stderr)
        return 1
