"""The systems under test: fanout and its peers, how to start them and where clients go."""

from __future__ import annotations

import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlencode

from .procs import SERVER_CPU, Proc

ClientKind = Literal["ws", "sio", "sse"]


@dataclass(frozen=True, slots=True)
class System:
    """One system: a server module with its arguments, and the client that talks to it."""

    key: str
    label: str
    module: str
    client: ClientKind
    path: str
    env: tuple[tuple[str, str], ...] = ()
    cwd: Path | None = None  # another checkout of fanout (``--baseline``); None: this one
    known: frozenset[str] | None = None  # the FANOUT_ settings that checkout has (None: all)

    def start(self, port: int, upstream_url: str, model: str) -> Proc:
        """Start the server pinned to the server CPU, logging warnings only."""
        args = ["--port", str(port), "--upstream-url", upstream_url, "--model", model]
        if self.module == "server":
            args.insert(0, "serve")
        env = {"FANOUT_SERVER_LOG_LEVEL": "warning", **BENCH_LIMITS, **dict(self.env)}
        if self.known is not None:  # an older checkout refuses settings it does not have
            env = {k: v for k, v in env.items() if k in self.known}
        return Proc(self.module, args, SERVER_CPU, env=env, cwd=self.cwd)

    def url(self, port: int, prompt: str = "", model: str = "") -> str:
        """The URL a client opens (the SSE proxy's carries its prompt)."""
        if self.client == "sse":
            return f"http://127.0.0.1:{port}{self.path}?" + urlencode(
                {"prompt": prompt, "model": model}
            )
        return f"ws://127.0.0.1:{port}{self.path}"

    @property
    def under_test(self) -> bool:
        """True for fanout itself (and a baseline checkout of it)."""
        return self.key in ("fanout", "baseline")

    @property
    def broadcasts(self) -> bool:
        """True for systems with a room that viewers join (all but the SSE proxy)."""
        return self.client != "sse"


# Thousands of viewers and many prompts come from this one machine: per-client limits off.
BENCH_LIMITS = {
    "FANOUT_LIMITS_MAX_CONNECTIONS_PER_CLIENT": "0",
    "FANOUT_LIMITS_PROMPTS_PER_MINUTE": "0",
    "FANOUT_LIMITS_ROOMS_PER_MINUTE": "0",
}
FANOUT = System("fanout", "fanout", "server", "ws", "/api/rooms/bench/ws")
WEBSOCKETS = System(
    "websockets", "websockets.broadcast", "bench.peers.ws_broadcast", "ws", "/bench"
)
SOCKETIO = System(
    "socketio",
    "python-socketio rooms",
    "bench.peers.socketio_rooms",
    "sio",
    "/socket.io/?EIO=4&transport=websocket",
)
RAW = System("raw", "raw floor (aiohttp send_frame loop)", "bench.peers.raw_floor", "ws", "/ws")
SSE_PROXY = System("sse-proxy", "per-client SSE proxy", "bench.peers.sse_proxy", "sse", "/chat")

SYSTEMS = (FANOUT, WEBSOCKETS, SOCKETIO, RAW, SSE_PROXY)
# Not in the default run: fanout with a per-subscriber coalescing window (limits.coalesce_ms),
# to see what batching frames would buy (``--systems fanout-coalesce``).
FANOUT_COALESCE = System(
    "fanout-coalesce",
    "fanout, coalesce_ms = 25",
    "server",
    "ws",
    "/api/rooms/bench/ws",
    (("FANOUT_LIMITS_COALESCE_MS", "25"),),
)
BY_KEY = {s.key: s for s in (*SYSTEMS, FANOUT_COALESCE)}


def baseline(checkout: Path) -> System:
    """The fanout of another checkout, with this checkout's packages and harness (A/B runs).

    Its server runs from ``checkout`` with the same interpreter, so only the code differs.
    """
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    config = tomllib.loads((checkout / "config.toml").read_text())
    known = frozenset(
        f"FANOUT_{section}_{key}".upper()
        for section, table in config.items()
        if isinstance(table, dict)
        for key in table
    )
    label = f"fanout at {rev or checkout.name}"
    return System(
        "baseline", label, "server", "ws", FANOUT.path, cwd=checkout.resolve(), known=known
    )
