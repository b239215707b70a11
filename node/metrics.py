"""The node's Prometheus metrics, served at `/metrics` (prometheus-client).

Counting sits on the fan-out's hot path, where prometheus-client's own Counter and Histogram
(a lock and a Python loop per update) cost about 5 % of a node's CPU in the fan-out
benchmark. So the node counts in plain attributes (an integer add; a bisect for a histogram)
and a collector turns them into metric families when Prometheus scrapes; prometheus-client
does the registry and the exposition format. Gauges are read at scrape time. Each node has a
registry of its own (tests run several nodes in one process).
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from node.background import FAILURES
from node.heap import HEAP

# Seconds: a publish is a Redis round trip (about 0.1-1 ms on one host), a fan-out a loop
# over local members; the upper buckets catch a struggling node.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Latency:
    """A histogram of seconds over `LATENCY_BUCKETS`, counted per bucket (not cumulative)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last is over every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative (bound, count) pairs and the sum, as prometheus-client takes them."""
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        return buckets, self.total

    def family(self, name: str, help: str) -> HistogramMetricFamily:
        buckets, total = self.buckets()
        return HistogramMetricFamily(name, help, buckets=buckets, sum_value=total)


class Metrics:
    """What the node counts, and the gauges it reads when scraped."""

    def __init__(self) -> None:
        self.received = 0  # valid chat messages, before budgets
        self.published = 0  # chat messages stored and published
        self.delivered = 0  # room frames written to local members
        self.joins = 0  # room joins accepted (a switch of rooms is one)
        self.messages_lost = 0  # seqs this node told its members will never come
        self.history_forks = 0  # rooms' histories this node saw fork (history_reset sent)
        self.history_reads = 0  # joins whose newest history was read, not a shared snapshot
        self.batches = 0  # writes that carried a busy client's batch of frames
        self.batched = 0  # frames in those writes
        self.redis_reconnects = 0
        self.upgrades_shed = 0  # chat upgrades answered 503: the handshake backlog was full
        self.publish_seconds = Latency()  # a message's handling to stored and published
        self.fanout_seconds = Latency()  # an envelope's arrival to written to every member
        self.errors: Counter[str] = Counter()  # error events sent, by code
        self.closes: Counter[str] = Counter()  # server-initiated closes, by close code
        self.api_calls: Counter[tuple[str, str]] = Counter()  # (command, "ok" or error code)
        self.webhook_results: Counter[tuple[str, str]] = Counter()  # (endpoint, result)
        self._hook_seconds: dict[str, Latency] = {}  # per hook: answered calls
        self._hook_failures: Counter[tuple[str, str]] = Counter()  # (hook, why)
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []
        self._labelled: list[tuple[str, str, str, dict[str, Callable[[], float]]]] = []
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def hook_calls(self, seconds: dict[str, Latency], failures: Counter[tuple[str, str]]
                   ) -> None:
        """Report the hooks' calls as their caller counts them."""
        self._hook_seconds, self._hook_failures = seconds, failures

    def watch(self, name: str, help: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read when Prometheus scrapes."""
        self._gauges.append((name, help, read))

    def watch_each(self, name: str, help: str, label: str,
                   reads: dict[str, Callable[[], float]]) -> None:
        """One gauge, one labelled series per entry of `reads`."""
        self._labelled.append((name, help, label, reads))

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's collector interface: the families, made at scrape time."""
        yield CounterMetricFamily("chat_messages_received", "Valid chat messages clients sent "
                                  "to this node, before budgets (invalid ones count in "
                                  "chat_errors)", value=self.received)
        yield CounterMetricFamily("chat_messages_published", "Chat messages this node stored "
                                  "and published", value=self.published)
        yield CounterMetricFamily("chat_frames_delivered", "Room frames (messages and presence "
                                  "events) written to this node's members", value=self.delivered)
        yield CounterMetricFamily("chat_room_joins", "Room joins this node accepted (each "
                                  "switch of rooms is one; with the sessions gauge, the churn "
                                  "of subscriptions)", value=self.joins)
        yield CounterMetricFamily("chat_messages_lost", "Seqs this node told its members, in "
                                  "messages_lost events, that they will never be delivered "
                                  "(history no longer held them after an outage)",
                                  value=self.messages_lost)
        yield CounterMetricFamily("chat_history_forks", "Forks of a room's history this node "
                                  "told its members of (history_reset): a Redis failover, or "
                                  "a Redis that lost its newest writes", value=self.history_forks)
        yield CounterMetricFamily("chat_history_reads", "Joins whose newest history this node "
                                  "read from the backend; the other joins without since shared "
                                  "the snapshot of the room's state", value=self.history_reads)
        yield CounterMetricFamily("chat_batched_writes", "Writes that carried a busy client's "
                                  "room events gathered over --write-delay",
                                  value=self.batches)
        yield CounterMetricFamily("chat_batched_frames", "Frames in those writes (÷ "
                                  "chat_batched_writes: frames per batch)", value=self.batched)
        yield CounterMetricFamily("chat_redis_reconnects", "Times the node got its Redis "
                                  "subscription back after losing it",
                                  value=self.redis_reconnects)
        yield CounterMetricFamily("chat_upgrades_shed", "Chat upgrades answered 503 because "
                                  "the handshake backlog was full", value=self.upgrades_shed)
        yield _by_label("chat_errors", "Error events sent to clients, by code", "code",
                        self.errors)
        yield _by_label("chat_background_failures", "Background work that ended in an "
                        "exception (logged with its traceback), by purpose; a loop the node "
                        "needs restarts with backoff", "purpose", FAILURES)
        yield _by_label("chat_closes", "Connections the server closed, by close code (1013: "
                        "slow consumer, 1008: flood, 4001: authentication)", "code", self.closes)
        yield _by_labels("chat_api_calls", "Server API commands this node answered, by "
                         "command and result (ok or the error code)", ("command", "result"),
                         self.api_calls)
        yield _by_labels("chat_hook_failures", "Publish and connect hook calls without a "
                         "usable answer, by hook and why (timeout, connection, status, "
                         "too_large, bad_answer)", ("hook", "why"), self._hook_failures)
        yield _by_labels("chat_webhook_deliveries", "Webhook POSTs by endpoint and result "
                         "(ok; failed: retried later; dead: too old, now a dead letter)",
                         ("endpoint", "result"), self.webhook_results)
        hooks = HistogramMetricFamily("chat_hook_seconds", "Answered publish and connect "
                                      "hook calls, from asking to the answer", labels=["hook"])
        for hook, latency in sorted(self._hook_seconds.items()):
            hooks.add_metric([hook], *latency.buckets())
        yield hooks
        yield self.publish_seconds.family(
            "chat_publish_seconds", "From a message's handling to its being stored and published")
        yield self.fanout_seconds.family(
            "chat_fanout_seconds", "From an envelope's arrival to its frame written to every "
            "local member (or added to a busy member's batch)")
        yield CounterMetricFamily("chat_gc_full_collections", "Full garbage collections in "
                                  "this process (node.heap)", value=HEAP.full_collections)
        yield CounterMetricFamily("chat_gc_full_seconds", "Seconds spent in them, every "
                                  "delivery of the process waiting", value=HEAP.full_seconds)
        yield GaugeMetricFamily("chat_gc_longest_full_seconds", "The longest of them",
                                value=HEAP.longest)
        yield GaugeMetricFamily("chat_gc_frozen_objects", "Objects that survived a full "
                                "collection and are left out of the next ones (node.heap)",
                                value=gc.get_freeze_count())
        for name, help, read in self._gauges:
            yield GaugeMetricFamily(name, help, value=read())
        for name, help, label, reads in self._labelled:
            gauge = GaugeMetricFamily(name, help, labels=[label])
            for value, read in reads.items():
                gauge.add_metric([value], read())
            yield gauge

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _by_label(name: str, help: str, label: str, counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def _by_labels(name: str, help: str, labels: tuple[str, str],
               counts: Counter[tuple[str, str]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help, labels=list(labels))
    for values, count in sorted(counts.items()):
        family.add_metric(list(values), count)
    return family
