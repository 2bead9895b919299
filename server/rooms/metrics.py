"""Prometheus metrics (``GET /metrics``), one registry per application.

Counters and histograms are updated where things happen; gauges that describe the present
(connections, rooms, queued bytes) are read from the live state at scrape time, so the hot
path pays nothing for them (``server.rooms.gauges``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

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

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
