"""Prometheus metrics (``GET /metrics``), one registry per application.

Counters and histograms are updated where things happen; gauges that describe the present
(connections, rooms, queued bytes) are read from the live state at scrape time, so the hot
path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .hub import Hub

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The application's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turns = Counter("fanout_turns", "Turns ended, by status.", ["status"], registry=r)
        self.upstream_requests = Counter(
            "fanout_upstream_requests", "Upstream chat-completions requests (attempts).", registry=r
        )
        self.ttft = Histogram(
            "fanout_upstream_ttft_seconds",
            "Upstream time to the first delta of a turn.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.publish = Histogram(
            "fanout_publish_seconds",
            "Time to encode a room's new events and deliver or queue them for its subscribers "
            "(in a room larger than one slice, for the first slice: the rest follows).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_repairs = Counter(
            "fanout_upstream_repairs",
            "Upstream values made valid instead of refused: lone surrogates that became U+FFFD, "
            "non-finite numbers dropped.",
            registry=r,
        )
        self.errors = Counter(
            "fanout_errors", "Errors answered to clients, by code.", ["code"], registry=r
        )

    def watch(self, hub: Hub, websockets: set[web.WebSocketResponse], sse: Sized) -> None:
        """Report the live state of ``hub`` and the open connections at every scrape."""
        self.registry.register(_Live(hub, websockets, sse))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _Live(Collector):
    def __init__(self, hub: Hub, websockets: set[web.WebSocketResponse], sse: Sized) -> None:
        self.hub = hub
        self.websockets = websockets
        self.sse = sse

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        connections = GaugeMetricFamily(
            "fanout_connections", "Open subscriber connections.", labels=["transport"]
        )
        connections.add_metric(["websocket"], len(self.websockets))
        connections.add_metric(["sse"], len(self.sse))
        yield connections
        rooms = self.hub.rooms.values()
        yield GaugeMetricFamily("fanout_rooms", "Rooms on this instance.", value=len(rooms))
        yield GaugeMetricFamily(
            "fanout_streaming_turns",
            "Turns streaming now.",
            value=sum(r.state.streaming_turn is not None for r in rooms),
        )
        subs = [s for r in rooms for s in r.subscribers]
        yield GaugeMetricFamily("fanout_subscribers", "Subscribers of all rooms.", value=len(subs))
        yield GaugeMetricFamily(
            "fanout_outbox_bytes",
            "Bytes queued in subscribers' outboxes.",
            value=sum(s.outbox.size for s in subs),
        )
        yield CounterMetricFamily(
            "fanout_merged_deltas",
            "Deltas merged into others for subscribers that fell behind.",
            value=self.hub.merged_by_gone + sum(s.outbox.merged for s in subs),
        )
        yield CounterMetricFamily(
            "fanout_broker_events_heard",
            "Sequenced events received from the broker (once per event per instance).",
            value=self.hub.broker.events_heard,
        )
        yield GaugeMetricFamily(
            "fanout_broker_rooms_listened",
            "Rooms this instance receives from the broker (rooms with local subscribers).",
            value=sum(r.listening for r in rooms),
        )
        yield CounterMetricFamily(
            "fanout_slow_consumer_closes",
            "Subscribers closed with 4000 for falling too far behind.",
            value=self.hub.slow_closes,
        )
