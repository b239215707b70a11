"""The cluster's drain lock in a real Redis: one holder, and it expires."""

from __future__ import annotations

import asyncio

from node.backends.redis.coordination import RedisCoordination


async def test_one_holder_at_a_time_and_a_crashed_holder_expires(
        redis_url, redis_prefix, redis_client) -> None:
    first = RedisCoordination(redis_client(redis_url), redis_prefix, "node-a", ttl=10)
    second = RedisCoordination(redis_client(redis_url), redis_prefix, "node-b", ttl=10)
    try:
        assert await first.lock_drain(ttl=0.3) is None
        assert await second.lock_drain(ttl=0.3) == "node-a"
        await second.unlock_drain()  # only the holder can release it
        assert await second.lock_drain(ttl=0.3) == "node-a"
        await asyncio.sleep(0.4)  # node-a "crashed": its lock runs out
        assert await second.lock_drain(ttl=5) is None
        await second.unlock_drain()
        assert await first.lock_drain(ttl=5) is None
    finally:
        await first.close()
        await second.close()
