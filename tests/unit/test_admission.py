"""A refused client is told to wait as long as the node needs for the crowd refused with it,
drawn evenly, so that a crash's clients do not all come back the next second."""

from __future__ import annotations

import random

import pytest

from node.transport import admission
from node.transport.admission import MAX_RETRY_AFTER, Admission


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(admission, "random", random.Random(7))
    return now


async def finished(gate: Admission, handshakes: int) -> None:
    for n in range(handshakes):
        gate.admit(n)
        gate.finished(n)


async def test_a_few_refused_come_back_in_a_second(clock: list[float]) -> None:
    gate = Admission(backlog=10, window=10.0)
    await finished(gate, 100)
    assert {gate.retry_after() for _ in range(50)} == {1}


async def test_a_crowd_is_spread_over_the_seconds_the_node_needs_for_it(
        clock: list[float]) -> None:
    gate = Admission(backlog=10, window=10.0)
    await finished(gate, 500)  # 500 handshakes finished this second
    clock[0] += 1.0
    waits = [gate.retry_after() for _ in range(3000)]  # 3,000 refused: 6 s of work
    assert min(waits) == 1 and max(waits) == 6
    assert waits[-500:].count(6) > 40, "drawn evenly, not all told the same"
    clock[0] += 2.0  # a quiet spell: the counts start over
    assert gate.retry_after() == 1


async def test_no_client_is_told_to_wait_more_than_the_cap(clock: list[float]) -> None:
    gate = Admission(backlog=10, window=10.0)  # nothing finished: the backlog a second
    assert max(gate.retry_after() for _ in range(1000)) == MAX_RETRY_AFTER


async def test_a_node_idle_until_the_crowd_came_counts_on_its_backlog_a_second(
        clock: list[float]) -> None:
    gate = Admission(backlog=500, window=10.0)
    waits = [gate.retry_after() for _ in range(3000)]  # nothing finished yet: 6 s of backlog
    assert max(waits) == 6
