"""The presence scripts in a real Redis: the key names they build in Lua are the names
`RedisKeys` gives, and they handle rooms of any size."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from node.backends.presence import Member, RoomPolicy
from node.backends.redis.presence import RedisPresence
from node.backends.redis.support import Client, RedisKeys
from node.chat.protocol import presence_templates

POLICY = RoomPolicy(("general",), max_rooms=10, rooms_per_hour=10, ttl=60, listed=100_000)
ADDRESS = "203.0.113.1"


@pytest.fixture
async def started(redis_url: str, redis_prefix: str, redis_client: Callable[[str], Client]
                  ) -> AsyncIterator[tuple[RedisPresence, aioredis.Redis, RedisKeys]]:
    """Presence on node-a, and a plain client to look at the keys."""
    presence = RedisPresence(redis_client(redis_url), redis_prefix, "node-a", ttl=10,
                             policy=POLICY,
                             announcements=lambda r, m: presence_templates(r, m.id, m.name))
    client = aioredis.Redis.from_url(redis_url)
    try:
        await presence.start()
        yield presence, client, RedisKeys(redis_prefix)
    finally:
        await client.aclose()
        await presence.close()


async def test_the_scripts_write_the_keys_redis_keys_names(started) -> None:
    presence, client, keys = started
    await presence.join("made", Member("u1", "alice"), exclude="", address=ADDRESS)
    assert await client.zrange(keys.room_names, 0, -1) == [b"general", b"made"]
    assert await client.zscore(keys.room_expiry, "made") == float("inf")
    assert await client.hkeys(keys.members("made")) == [b"u1"]
    assert await client.hkeys(keys.holders("made")) == [b"u1\0node-a"]
    assert await client.hget(keys.holds("made"), "u1") == b"1"
    assert await client.hkeys(keys.node_members("node-a")) == [b"made\0u1"]
    assert await client.hkeys(keys.farewells("made")) == [b"u1"]
    version = int(await client.get(keys.presence_version("made")))
    assert await client.sismember(keys.nodes, "node-a")
    for key in (keys.seq("made"), keys.history("made"), keys.epoch("made"),
                keys.history_bytes("made")):
        await client.set(key, b"1")
    assert await presence.leave("made", Member("u1", "alice"))
    assert int(await client.get(keys.presence_version("made"))) == version + 1
    assert not await client.exists(keys.farewells("made"))
    assert 0 < await client.zscore(keys.room_expiry, "made") < float("inf")
    for key in (keys.seq("made"), keys.history("made"), keys.epoch("made"),
                keys.history_bytes("made"), keys.presence_version("made")):
        assert 0 < await client.pttl(key) <= 60_000  # the room's state expires with it


async def test_a_room_larger_than_luas_unpack_limit_joins_and_lists(started) -> None:
    """JOIN and ROSTER return every member: unpack() of ~8,000 values failed the join of
    the 10,000-member room in the room-shape benchmark."""
    presence, client, keys = started
    await client.hset(keys.members("general"), mapping={
        f"u{n}": f'["u{n}","user{n}"]' for n in range(9000)})
    joined = await presence.join("general", Member("last", "last"), exclude="", address=ADDRESS)
    assert len(joined.roster.members) == 9001
    assert len((await presence.roster("general")).members) == 9001
