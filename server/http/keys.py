"""Typed application state keys (``web.AppKey``) shared by the handlers."""

from __future__ import annotations

from aiohttp import web

from server.config import Config
from server.http.admission import PromptAdmission
from server.http.guards import Budget, ConnectionCount
from server.http.heartbeat import Heartbeat
from server.rooms.hub import Hub
from server.rooms.metrics import Metrics
from server.rooms.subscriber import Subscriber
from server.upstream.client import UpstreamClient

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
