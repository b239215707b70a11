"""Reading the nodes' Prometheus metrics from the load tools: the latency inside each node
(publish: a message's handling to stored; fan-out: an envelope's arrival to written), beside
the end-to-end latency the clients measure, and how many frames a write carried."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

HISTOGRAMS = {"publish": "chat_publish_seconds", "fanout": "chat_fanout_seconds"}
WRITES = ("chat_frames_delivered", "chat_batched_frames", "chat_batched_writes")
Buckets = dict[str, list[tuple[float, float]]]  # histogram -> (upper bound s, cumulative count)


def _families(node_url: str) -> list:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"{node_url}/metrics", timeout=5) as reply:
        return list(text_string_to_metric_families(reply.read().decode()))


def gauge(node_url: str, name: str) -> float | None:
    """A gauge of the node's now (None when it has no such gauge)."""
    for family in _families(node_url):
        if family.name == name and family.samples:
            return float(family.samples[0].value)
    return None


def sample(node_url: str, name: str, **labels: str) -> float:
    """The value of the node's sample `name` with these labels now (0 when it has none)."""
    for family in _families(node_url):
        for one in family.samples:
            if one.name == name and all(one.labels.get(k) == v for k, v in labels.items()):
                return float(one.value)
    return 0.0


@dataclass(frozen=True)
class Marks:
    """One scrape of a node: its latency histograms and its counts of frames and writes."""

    histograms: Buckets
    counts: dict[str, float]


def marks(node_url: str) -> Marks:
    """The node's latency histograms and write counts now (one scrape)."""
    histograms: Buckets = {name: [] for name in HISTOGRAMS}
    counts: dict[str, float] = {}
    names = {metric: name for name, metric in HISTOGRAMS.items()}
    for family in _families(node_url):
        if family.name in names:
            histograms[names[family.name]] = [(float(s.labels["le"]), s.value)
                                              for s in family.samples
                                              if s.name.endswith("_bucket")]
        elif family.name in WRITES:
            counts[family.name] = family.samples[0].value
    return Marks(histograms, counts)


def buckets(node_url: str) -> Buckets:
    """The node's latency histograms now."""
    return marks(node_url).histograms


def quantile_ms(before: list[tuple[float, float]], after: list[tuple[float, float]],
                q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the q-quantile of what was observed between
    two scrapes; None when nothing was."""
    counts = [(bound, a - b) for (bound, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1] if counts else 0
    if total <= 0:
        return None
    for bound, cumulative in counts:
        if cumulative >= q * total:
            return bound * 1000
    return None


def p99_between(before: Buckets, after: Buckets) -> dict[str, float | None]:
    return {name: quantile_ms(before[name], after[name], 0.99) for name in HISTOGRAMS}


def frames_per_write(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Room frames per write to a client between two scrapes' counts (1 when nothing was
    batched); None when nothing was delivered or the node counts no batches."""
    if not all(name in before and name in after for name in WRITES):
        return None
    delivered, batched, batches = (after[name] - before[name] for name in WRITES)
    writes = delivered - batched + batches
    return delivered / writes if writes > 0 else None
