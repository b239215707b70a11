"""The coordination contract (node.backends.coordination.Coordination), run against every
implementation; what only a multi-node backend can show is in test_drain_lock.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from node.backends.coordination import Coordination
from node.backends.memory.coordination import MemoryCoordination
from node.backends.redis.coordination import RedisCoordination
from node.backends.redis.support import Client
from node.ratelimit import Budget
from tests.conftest import (
    REDIS_BACKENDS, just_after, just_before_a_whole_second, redis_endpoint,
)


@pytest.fixture(params=["memory", *REDIS_BACKENDS])
async def coordination(request: pytest.FixtureRequest,
                       redis_client: Callable[[str, bool], Client]
                       ) -> AsyncIterator[Coordination]:
    implementation: Coordination
    if request.param == "memory":
        implementation = MemoryCoordination("node-a")
    else:
        client = redis_client(*redis_endpoint(request, request.param))
        implementation = RedisCoordination(client, request.getfixturevalue("redis_prefix"),
                                           "node-a", ttl=10)
    try:
        yield implementation
    finally:
        await implementation.close()


async def test_the_secret_is_random_and_stays_the_same(coordination: Coordination) -> None:
    secret = await coordination.secret()
    assert len(secret) >= 32 and await coordination.secret() == secret


async def test_a_node_that_beats_is_alive(coordination: Coordination) -> None:
    await coordination.heartbeat()
    assert await coordination.heartbeat() is False, "its liveness had not lapsed"
    assert "node-a" in await coordination.live_nodes()


async def test_a_heartbeat_tells_the_nodes_connections(coordination: Coordination) -> None:
    await coordination.heartbeat(7)
    assert (await coordination.node_connections())["node-a"] == 7
    await coordination.heartbeat(2)
    assert (await coordination.node_connections())["node-a"] == 2


async def test_the_drain_lock_is_taken_released_and_taken_again(
        coordination: Coordination) -> None:
    assert await coordination.lock_drain(ttl=5) is None
    await coordination.unlock_drain()
    assert await coordination.lock_drain(ttl=5) is None
    await coordination.unlock_drain()


async def test_an_allowance_gives_its_limit_and_no_more(coordination: Coordination) -> None:
    budget = Budget("identities", "203.0.113.7", 3, 3600.0)
    assert [await coordination.take(budget) for _ in range(4)] == [True, True, True, False]
    assert await coordination.take(Budget("identities", "203.0.113.8", 3, 3600.0))


@pytest.mark.timeout(10)
async def test_an_allowance_is_not_doubled_by_spending_it_either_side_of_a_second(
        coordination: Coordination) -> None:
    """A bucket, not a count per window: 5 at once, then one per 0.2 s, whatever the clock."""
    budget = Budget("identities", "203.0.113.9", 5, 1.0)
    await coordination.take(Budget("identities", "warm-up", 5, 1.0))  # a cluster's slot map
    edge = await just_before_a_whole_second()
    assert [await coordination.take(budget) for _ in range(5)] == [True] * 5
    await just_after(edge)
    after_the_edge = [await coordination.take(budget) for _ in range(5)]
    assert after_the_edge.count(True) <= 2, after_the_edge


@pytest.mark.timeout(10)
async def test_an_allowance_refills_at_its_rate(coordination: Coordination) -> None:
    budget = Budget("identities", "203.0.113.10", 2, 0.4)  # 2 at once, one per 0.2 s
    assert [await coordination.take(budget) for _ in range(3)] == [True, True, False]
    await asyncio.sleep(0.25)
    assert [await coordination.take(budget) for _ in range(2)] == [True, False]
