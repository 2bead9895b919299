"""The command line: ``fanout serve`` and ``fanout mock-upstream``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from server.app import create_app
from server.config import MIN_SECRET_CHARS, Config, load_config
from server.core.errors import ConfigError
from server.http.logs import AccessLog, setup_logging
from server.tools import loadtest

DEFAULT_CONFIG = Path("config.toml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout",
        description="Consume ONE OpenAI chat-completions stream per prompt and broadcast it "
        "live to every WebSocket viewer of a room.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server. With no OPENAI_API_KEY and no upstream URL it serves in "
        "demo mode on the built-in mock upstream. Settings: config.toml, then FANOUT_<SECTION>_"
        "<KEY> environment variables, then these flags.",
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: ./config.toml when present)",
    )
    serve.add_argument("--host", help="address to listen on (server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (server.port)")
    serve.add_argument(
        "--upstream-url",
        help="OpenAI-style base URL with its version path, "
        "e.g. http://127.0.0.1:8000/v1 (upstream.base_url)",
    )
    serve.add_argument(
        "--upstream-api",
        choices=("chat", "responses"),
        help="the API the upstream is called with: chat (Chat Completions) or responses "
        "(the Responses API) (upstream.api)",
    )
    serve.add_argument("--model", help="model for prompts that name none (upstream.model)")
    serve.add_argument("--broker", help="broker URL: memory:// or redis://host:6379/0 (broker.url)")

    mock = sub.add_parser(
        "mock-upstream",
        help="run the OpenAI-compatible mock upstream",
        description="An OpenAI-compatible server with deterministic answers, for demos, tests "
        "and load tests. Models: mock, mock-tools, mock-reasoning, mock-refusal, mock-error, "
        "mock-truncate, mock-429, mock-500.",
    )
    mock.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    mock.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    mock.add_argument(
        "--tokens-per-second",
        type=float,
        default=40.0,
        help="streaming rate, 0 = as fast as possible (default 40)",
    )
    mock.add_argument(
        "--ttft", type=float, default=0.3, help="seconds before the first token (default 0.3)"
    )
    token = sub.add_parser(
        "token",
        help="mint an access token (auth.mode = token)",
        description="Print a signed token (JWT, HS256) for a room and role. The secret comes "
        "from FANOUT_AUTH_SECRET, as on the server.",
    )
    token.add_argument("--room", required=True, help="room name, or * for every room")
    token.add_argument(
        "--role",
        required=True,
        choices=["viewer", "publisher", "admin"],
        help="viewer watches; publisher also prompts and cancels; admin: anything",
    )
    token.add_argument(
        "--ttl", type=float, default=3600.0, help="seconds until it expires (default 3600)"
    )
    token.add_argument("--sub", help="subject: who the token is for (default: random)")

    watch = sub.add_parser(
        "watch",
        help="watch a room in the terminal (and optionally prompt it)",
        description="Print a room's answers as they stream. With --prompt, send it and exit "
        "when its turn ends; without, watch until Ctrl-C (or --turns N).",
    )
    watch.add_argument("room", help="room name")
    watch.add_argument(
        "--url", default="http://127.0.0.1:8080", help="server URL (default http://127.0.0.1:8080)"
    )
    watch.add_argument("--prompt", help="send this prompt and exit when its answer ends")
    watch.add_argument("--model", help="model for --prompt (default: the server's)")
    watch.add_argument("--turns", type=int, default=0, help="exit after N turns end (0 = never)")
    loadtest.add_parser(sub)
    return parser


def _serve_config(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(
        path,
        os.environ,
        {
            "server.host": args.host,
            "server.port": args.port,
            "upstream.base_url": args.upstream_url,
            "upstream.api": args.upstream_api,
            "upstream.model": args.model,
            "broker.url": args.broker,
        },
    )


def _mint(args: argparse.Namespace) -> int:
    from server.core.errors import ClientError
    from server.http.auth import mint_token

    secret = os.environ.get("FANOUT_AUTH_SECRET", "").strip()
    if len(secret) < MIN_SECRET_CHARS:
        print(
            f"fanout token: set FANOUT_AUTH_SECRET (the server's secret, at least "
            f"{MIN_SECRET_CHARS} characters) first",
            file=sys.stderr,
        )
        return 2
    try:
        print(mint_token(secret, args.room, args.role, args.ttl, args.sub))
    except ClientError as exc:
        print(f"fanout token: {exc.message}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fanout`` and ``python -m server``."""
    args = _parser().parse_args(argv)
    if args.command == "mock-upstream":
        from server.tools.mock_upstream import MockSettings, run_mock_upstream

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        run_mock_upstream(args.host, args.port, MockSettings(args.tokens_per_second, args.ttft))
        return 0
    if args.command == "token":
        return _mint(args)
    if args.command == "loadtest":
        return loadtest.main(args)
    if args.command == "watch":
        from server.tools.watch import run_watch

        return run_watch(args.url, args.room, args.prompt, args.model, args.turns)
    try:
        config = _serve_config(args)
    except ConfigError as exc:
        print(f"fanout: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.server.log_level, config.server.log_format)
    if config.demo:
        print(
            "fanout: DEMO MODE — no OPENAI_API_KEY and no --upstream-url; answers come from "
            "the built-in mock upstream.",
            file=sys.stderr,
        )
    url = f"http://{config.server.host}:{config.server.port}"
    print(f"fanout: serving on {url}  (WebSocket: {url}/api/rooms/<room>/ws)", file=sys.stderr)
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        print=None,
        access_log_class=AccessLog,
        # Also bounds a connection that never completes its request (a slow handshake).
        keepalive_timeout=config.server.idle_timeout_seconds,
        shutdown_timeout=config.server.shutdown_grace_seconds,
    )
    return 0
