"""What peers that do not read may queue: by client address and for the whole node."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from node.transport import output_budget
from node.transport.output_budget import OutputBudget


@dataclass(eq=False)
class Peer:
    now: int = 0  # what its transport holds now

    def queued(self) -> int:
        return self.now


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output_budget, "REFRESH_EVERY", 0.0)


def test_an_address_past_its_ceiling_is_refused_and_others_are_not() -> None:
    budget = OutputBudget(per_address=1000, per_node=10_000)
    slow = [Peer(400), Peer(400), Peer(400)]
    assert budget.account("a", slow[0], 400) and budget.account("a", slow[1], 400)
    assert not budget.account("a", slow[2], 400)  # 1,200 past 1,000 (at the edge: allowed)
    assert budget.account("b", Peer(900), 900)
    assert (budget.queued_by("a"), budget.queued_by("b"), budget.total) == (1200, 900, 2100)


def test_a_count_gone_stale_is_taken_afresh_before_anyone_is_refused() -> None:
    budget = OutputBudget(per_address=1000, per_node=10_000)
    drained = Peer(800)
    budget.account("a", drained, 800)
    drained.now = 0  # it read everything since, unseen
    assert budget.account("a", Peer(700), 700)  # 1,500 counted, 700 in fact
    assert budget.queued_by("a") == 700


def test_the_node_ceiling_holds_over_addresses() -> None:
    budget = OutputBudget(per_address=1000, per_node=1500)
    assert budget.account("a", Peer(800), 800)
    assert not budget.account("b", Peer(800), 800)


def test_a_gone_peer_counts_nothing_and_an_address_with_nothing_is_forgotten() -> None:
    budget = OutputBudget(per_address=1000, per_node=10_000)
    peer = Peer(500)
    budget.account("a", peer, 500)
    budget.forget("a", peer)
    assert budget.total == 0 and budget.queued_by("a") == 0
    assert not budget._counts and not budget._sums  # no state kept per address
