"""A dead node's presence released by another node a page a script at a time: every member
announced gone and forgotten, every name freed, the node buried; no script takes more than a
page, and a reaper that lost the settling to another stops."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from node.backends.presence import Member, RoomPolicy
from node.backends.redis import presence as redis_presence
from node.backends.redis.presence import RedisPresence
from node.backends.redis.support import Client, RedisKeys
from node.chat.protocol import presence_templates
from tests.conftest import REDIS_BACKENDS, redis_endpoint

ROOMS = ("general", "random", "lobby")
POLICY = RoomPolicy(ROOMS, max_rooms=10, rooms_per_hour=10, ttl=60, listed=20,
                    address_rooms_per_hour=10)
PAGE = 100
# Past 512 fields (Debian's hash-max-listpack-entries) Redis keeps the node's hash as a
# table, which HSCAN reads in pages; each room gets more than a page of members.
MEMBERS = [Member(f"u-{n}", f"user{n}") for n in range(600)]


def _announcements(room: str, member: Member) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    return presence_templates(room, member.id, member.name)


class Recorded:
    """A presence whose cluster-wide scripts are recorded: (script, its arguments); `after`
    runs after each."""

    def __init__(self, presence: RedisPresence,
                 after: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        shared = presence._shared

        async def recording(script: str, *args: object) -> Any:
            self.calls.append((script, args))
            answer = await shared(script, *args)
            if after is not None:
                await after(script)
            return answer

        presence._shared = recording  # type: ignore[method-assign]


@pytest.fixture(params=REDIS_BACKENDS)
async def client(request: pytest.FixtureRequest,
                 redis_client: Callable[[str, bool], Client]) -> Client:
    return redis_client(*redis_endpoint(request, request.param))


@pytest.fixture
async def pair(client: Client, redis_prefix: str,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[RedisPresence, ...]]:
    """A node that joined MEMBERS (each holding its name) and never heartbeat, so it looks
    dead, and two live nodes that may reap it."""
    monkeypatch.setattr(redis_presence, "REAP_PAGE", PAGE)
    nodes = [RedisPresence(client, redis_prefix, node, 10, POLICY, _announcements)
             for node in ("node-dead", "node-a", "node-b")]
    try:
        for n, member in enumerate(MEMBERS):
            await nodes[0].join(ROOMS[n % len(ROOMS)], member, "", "203.0.113.1")
            assert await nodes[0].claim_name((member.name,), member.id) is None
        yield tuple(nodes)
    finally:
        for presence in nodes:
            await presence.close()


async def test_a_dead_node_is_released_a_page_at_a_time(
        pair: tuple[RedisPresence, ...], client: Client, redis_prefix: str) -> None:
    _, reaper, _ = pair
    recorded = Recorded(reaper)
    released: list[int] = []
    release = reaper._release

    async def counted(node: str, room: str, member_ids: list[str]) -> Any:
        released.append(len(member_ids))
        return await release(node, room, member_ids)

    reaper._release = counted  # type: ignore[method-assign,assignment]
    departures = await reaper.reap()
    calls = list(recorded.calls)
    assert sorted((d.room, d.member.id, d.member.name) for d in departures) == sorted(
        (ROOMS[n % len(ROOMS)], member.id, member.name) for n, member in enumerate(MEMBERS))
    for room in ROOMS:
        assert (await reaper.roster(room)).members == []
    for member in MEMBERS:
        assert await reaper.claim_name((member.name,), "u-other") is None, "its name is free"
    keys = RedisKeys(redis_prefix)
    assert not await client.exists(keys.node_members("node-dead"))
    assert b"node-dead" not in await client.smembers(keys.nodes)  # type: ignore[misc]
    scripts = [script for script, _ in calls]
    assert scripts.count("dead_names") == -(-len(MEMBERS) // PAGE)
    assert scripts.count("dead_members") >= 2, "the members were read in pages"
    assert scripts[-1] == "bury"
    assert sum(released) == len(MEMBERS) and max(released) == PAGE, released
    assert len(released) == len(ROOMS) * -(-len(MEMBERS) // len(ROOMS) // PAGE), "by room"
    forgotten = [len(args) - 2 for script, args in calls if script == "forget"]
    assert sum(forgotten) == 3 * len(MEMBERS) and max(forgotten) <= 3 * PAGE, forgotten


async def test_a_reaper_that_lost_the_settling_stops(
        pair: tuple[RedisPresence, ...], client: Client, redis_prefix: str) -> None:
    _, stalled, other = pair
    keys = RedisKeys(redis_prefix)

    async def taken_over(script: str) -> None:  # node-a stalls past its settling time
        if script == "claim_dead":
            await client.set(keys.settling("node-dead"), "node-b")

    recorded = Recorded(stalled, taken_over)
    assert await stalled.reap() == [], "claimed by node-b now"
    assert [script for script, _ in recorded.calls] == ["claim_dead", "dead_names"]
    assert await client.hlen(keys.node_members("node-dead")) == len(MEMBERS)  # type: ignore[misc]
    await client.delete(keys.settling("node-dead"))
    assert len(await other.reap()) == len(MEMBERS), "the next reaper releases them all"
