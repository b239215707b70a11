"""The node's Prometheus metrics, served at `/metrics` (prometheus-client).

Each node has a registry of its own (tests run several nodes in one process). What can be
read when Prometheus scrapes (connections, rooms, readiness) is read then, by callbacks, and
costs the chat nothing; the rest is counted once per message or per fan-out, never per
recipient.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds: a publish is a Redis round trip (about 0.1-1 ms on one host), a fan-out a loop
# over local members; the upper buckets catch a struggling node.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters and histograms the node updates; gauges it reads at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("chat_messages_received", "Valid chat messages clients sent "
                                "to this node, before budgets (invalid ones count in "
                                "chat_errors)", registry=r)
        self.published = Counter("chat_messages_published", "Chat messages this node stored "
                                 "and published", registry=r)
        self.delivered = Counter("chat_frames_delivered", "Room frames (messages and presence "
                                 "events) written to this node's members", registry=r)
        self.publish_seconds = Histogram(
            "chat_publish_seconds", "From a message's handling to its being stored and "
            "published", buckets=LATENCY_BUCKETS, registry=r)
        self.fanout_seconds = Histogram(
            "chat_fanout_seconds", "From an envelope's arrival to its frame written to every "
            "local member", buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("chat_errors", "Error events sent to clients, by code", ["code"],
                              registry=r)
        self.closes = Counter("chat_closes", "Connections the server closed, by close code "
                              "(1013: slow consumer, 1008: flood)", ["code"], registry=r)
        self.redis_reconnects = Counter("chat_redis_reconnects", "Times the node got its "
                                        "Redis subscription back after losing it", registry=r)

    def watch(self, name: str, help: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read when Prometheus scrapes."""
        Gauge(name, help, registry=self.registry).set_function(read)

    def watch_each(self, name: str, help: str, label: str,
                   reads: dict[str, Callable[[], float]]) -> None:
        """One gauge, one labelled series per entry of `reads`."""
        gauge = Gauge(name, help, [label], registry=self.registry)
        for value, read in reads.items():
            gauge.labels(value).set_function(read)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
