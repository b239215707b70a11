"""The Redis broker's publish path against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from gateway.processes import redis_url as redis_url_of
from node.backends.broker import AlreadyStored, BudgetSpent, Idempotency
from node.backends.errors import OutcomeUnknown, Unavailable
from node.backends.redis import broker as broker_redis
from node.backends.redis.broker import RedisBroker
from node.backends.redis.support import Client
from node.ratelimit import Budget
from tests.broker_events import Recorder
from tests.conftest import REDIS_PASSWORD
from tests.reply_losing_proxy import reply_losing_proxy


async def started(client: Client, prefix: str, events: Recorder | None = None) -> RedisBroker:
    broker = RedisBroker(client, prefix, "node-a", 100, 2**20)
    await broker.start(events or Recorder())
    return broker


async def test_concurrent_publishes_get_seqs_in_arrival_order(redis_url, redis_prefix,
                                                              redis_client) -> None:
    broker = await started(redis_client(redis_url), redis_prefix)
    try:
        seqs = await asyncio.gather(
            *(broker.publish_message("r", b'{"n":', (), 0) for _ in range(50)))
        assert seqs == list(range(1, 51))
        window = await broker.history("r", 100)
        assert window.seq == 50 and len(window.messages) == 50
    finally:
        await broker.close()


async def test_publishes_survive_redis_forgetting_the_script(redis_url, redis_prefix,
                                                             redis_client) -> None:
    broker = await started(redis_client(redis_url), redis_prefix)
    admin = aioredis.from_url(redis_url)
    try:
        assert await broker.publish_message("r", b'{"n":', (), 0) == 1
        await admin.script_flush()
        seqs = await asyncio.gather(
            *(broker.publish_message("r", b'{"n":', (), 0) for _ in range(10)))
        assert seqs == list(range(2, 12))
    finally:
        await admin.aclose()
        await broker.close()


async def _publish_until_spent(broker: RedisBroker, budget: Budget) -> int:
    published = 0
    while True:
        try:
            await broker.publish_message("r", b'{"n":', (budget,), 0)
        except BudgetSpent:
            return published
        published += 1


async def test_a_budget_holds_across_nodes_within_one_slice_per_node(redis_url, redis_client,
                                                                     redis_prefix) -> None:
    """Nodes take a budget from Redis an eighth at a time: together they publish at least
    the limit and at most the limit plus what the other node still holds (one slice)."""
    budget = Budget("user", "mallory", 32, 3e6)  # a window of weeks: no boundary mid-test
    here = await started(redis_client(redis_url), redis_prefix)
    there = await started(redis_client(redis_url), redis_prefix)
    try:
        first = await _publish_until_spent(here, budget)
        second = await _publish_until_spent(there, budget)
        assert first == 32 and second == 0  # the first node spent it all: nothing left
        fresh = Budget("user", "trudy", 32, 3e6)
        counts = [0, 0]
        for turn in range(40):
            broker = (here, there)[turn % 2]
            try:
                await broker.publish_message("r", b'{"n":', (fresh,), 0)
                counts[turn % 2] += 1
            except BudgetSpent:
                pass
        assert 32 <= sum(counts) <= 32 + 32 // 8, counts
    finally:
        await here.close()
        await there.close()


async def test_a_publish_reaching_redis_past_its_deadline_stores_nothing(
        redis_url, redis_prefix, redis_client, monkeypatch) -> None:
    """A publish held up in the network must not land after its node answered its sender."""
    broker = await started(redis_client(redis_url), redis_prefix)
    try:
        assert await broker.publish_message("r", b'{"n":', (), 0) == 1
        monkeypatch.setattr(broker_redis, "PUBLISH_DEADLINE", -1.0)  # as if a second late
        with pytest.raises(Unavailable) as refused:
            await broker.publish_message("r", b'{"n":', (), 0)
        assert not isinstance(refused.value, OutcomeUnknown), "an answer: nothing was stored"
        window = await broker.history("r", 100)
        assert window.seq == 1 and len(window.messages) == 1
    finally:
        await broker.close()


async def test_a_publish_without_an_answer_is_of_unknown_outcome(redis_url, redis_prefix,
                                                                  redis_client,
                                                                  monkeypatch) -> None:
    broker = await started(redis_client(redis_url), redis_prefix)

    async def no_answer(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise TimeoutError("no reply")

    try:
        monkeypatch.setattr(broker._scripts, "run", no_answer)
        with pytest.raises(OutcomeUnknown):
            await broker.publish_message("r", b'{"n":', (), 0)
    finally:
        await broker.close()


@pytest.mark.parametrize("keyed", [True, False])
async def test_a_publish_whose_answer_was_lost_is_stored_once(
        redis_server, redis_prefix, redis_client, keyed: bool) -> None:
    """Issue 31: the publish ran in Redis and its answer was lost with the connection. With
    an idempotency key the node runs it again on a fresh connection, where the script finds
    the key: stored once, and its seq known. Without one it must not run again: its outcome
    is unknown to the sender, and it is stored once."""
    template = b'{"text":"lose-my-answer","seq":'
    idempotency = Idempotency("5:alice:k1", 60.0) if keyed else None
    async with reply_losing_proxy(redis_server.port, b"lose-my-answer",
                                  every_connection=False) as port:
        through = redis_client(redis_url_of(port, REDIS_PASSWORD))
        broker = await started(through, redis_prefix)
        try:
            if keyed:
                with pytest.raises(AlreadyStored) as stored:
                    await broker.publish_message("r", template, (), 0, "", idempotency)
                assert stored.value.seq == 1, "its own first run: the seq it was stored as"
            else:
                with pytest.raises(OutcomeUnknown):
                    await broker.publish_message("r", template, (), 0, "", idempotency)
            window = await broker.history("r", 100)
            assert (window.seq, len(window.messages)) == (1, 1), "stored once"
            assert await broker.publish_message("r", b'{"n":', (), 0) == 2
        finally:
            await broker.close()

