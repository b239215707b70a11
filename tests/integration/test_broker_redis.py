"""The Redis broker's publish path against a real redis-server."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from node.broker_redis import RedisBroker
from node.envelope import Publication


async def started(redis_url: str, prefix: str, received: list[Publication]) -> RedisBroker:
    async def reconnected() -> None:
        pass

    broker = RedisBroker(redis_url, prefix, "node-a", 100, on_reconnect=reconnected)
    await broker.start(received.append)
    return broker


async def test_concurrent_publishes_get_seqs_in_arrival_order(redis_url, redis_prefix) -> None:
    broker = await started(redis_url, redis_prefix, [])
    try:
        seqs = await asyncio.gather(
            *(broker.publish_message("r", b'{"n":', ()) for _ in range(50)))
        assert seqs == list(range(1, 51))
        window = await broker.history("r", 100)
        assert window.seq == 50 and len(window.messages) == 50
    finally:
        await broker.close()


async def test_publishes_survive_redis_forgetting_the_script(redis_url, redis_prefix) -> None:
    broker = await started(redis_url, redis_prefix, [])
    admin = aioredis.from_url(redis_url)
    try:
        assert await broker.publish_message("r", b'{"n":', ()) == 1
        await admin.script_flush()
        seqs = await asyncio.gather(
            *(broker.publish_message("r", b'{"n":', ()) for _ in range(10)))
        assert seqs == list(range(2, 12))
    finally:
        await admin.aclose()
        await broker.close()
