"""Typed application state keys (``web.AppKey``) shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from .admission import PromptAdmission
from .config import Config
from .guards import Budget, ConnectionCount
from .heartbeat import Heartbeat
from .hub import Hub
from .metrics import Metrics
from .subscriber import Subscriber
from .upstream import UpstreamClient

CONFIG = web.AppKey("config", Config)
HUB = web.AppKey("hub", Hub)
UPSTREAM = web.AppKey("upstream", UpstreamClient)
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
SSE_STREAMS: web.AppKey[set[Subscriber]] = web.AppKey("sse_streams")
PROMPTS = web.AppKey("prompts", PromptAdmission)
ROOM_BUDGET = web.AppKey("room_budget", Budget)
CONNECTIONS = web.AppKey("connections", ConnectionCount)
METRICS = web.AppKey("metrics", Metrics)
HEARTBEAT = web.AppKey("heartbeat", Heartbeat)
