"""The cluster's drain lock in a real Redis: one holder, and it expires."""

from __future__ import annotations

import asyncio

from node.presence import RoomPolicy
from node.presence_redis import RedisPresence

POLICY = RoomPolicy(("general",), max_rooms=10, rooms_per_hour=10, ttl=60)


async def test_one_holder_at_a_time_and_a_crashed_holder_expires(redis_url, redis_prefix) -> None:
    first = RedisPresence(redis_url, redis_prefix, "node-a", ttl=10, policy=POLICY)
    second = RedisPresence(redis_url, redis_prefix, "node-b", ttl=10, policy=POLICY)
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
