"""The one quantile every load tool reports: nearest rank over sorted samples."""

from __future__ import annotations


def percentile(ordered: list[float], q: float) -> float | None:
    """The q-quantile of sorted values (nearest rank); None when there are none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
