"""Gauges read from the live state of the hub and the open connections at scrape time."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.rooms.hub import Hub
from server.rooms.metrics import Metrics


def watch(metrics: Metrics, hub: Hub, websockets: set[web.WebSocketResponse], sse: Sized) -> None:
    """Report the live state of ``hub`` and the open connections at every scrape."""
    metrics.registry.register(_Live(hub, websockets, sse))


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
