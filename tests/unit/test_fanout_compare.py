"""The side-by-side comparison's ratios: node CPU per delivery, ours ÷ the peer's, per round."""

from __future__ import annotations

from typing import Any

from loadtest.fanout import ratios_by_round


def _run(round_: int, costs: dict[float, float | None]) -> dict[str, Any]:
    """A run whose steps cost `costs[rate]` µs of node CPU per delivery (None: failed)."""
    return {"round": round_, "steps": [
        {"target_per_s": rate, "passed": cost is not None, "delivered": 1_000_000,
         "cpu_s": {"node1": (cost or 0) / 2, "node2": (cost or 0) / 2, "redis": 9.0}}
        for rate, cost in costs.items()]}


def test_each_round_pairs_the_runs_made_back_to_back() -> None:
    ours = [_run(1, {10.0: 6.0, 20.0: 5.0}), _run(2, {10.0: 9.0, 20.0: 8.0})]
    peer = [_run(2, {10.0: 10.0, 20.0: 10.0}), _run(1, {10.0: 12.0, 20.0: 20.0})]
    assert ratios_by_round(ours, peer) == {10.0: [0.5, 0.9], 20.0: [0.25, 0.8]}


def test_a_rate_counts_only_in_rounds_where_both_passed_it() -> None:
    ours = [_run(1, {10.0: 6.0, 20.0: 5.0}), _run(2, {10.0: 6.0, 20.0: None})]
    peer = [_run(1, {10.0: 12.0, 20.0: None}), _run(2, {10.0: 6.0, 20.0: 5.0})]
    assert ratios_by_round(ours, peer) == {10.0: [0.5, 1.0]}
