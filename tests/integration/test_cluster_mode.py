"""Cluster mode on a real Redis Cluster (3 primaries, a replica each): each room's traffic
on its own shard's Pub/Sub, and a slot that moves or a primary that dies costs the room's
members nothing they were acknowledged. The contract tests, test_cluster.py,
test_presence_order.py and test_zero_loss.py run against a Redis Cluster too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from redis.crc import key_slot

from gateway.cluster import Cluster
from gateway.processes import Service
from gateway.redis_cluster import RedisCluster
from node.backends.redis.support import RedisKeys
from tests.chat_client import ChatClient
from tests.conftest import unlimited_flags

pytestmark = pytest.mark.slow
KEYS = RedisKeys("chat")


def _slot(room: str) -> int:
    return key_slot(KEYS.channel(room).encode())


def _rooms_on_every_shard(redis: RedisCluster, per_shard: int) -> dict[int, list[str]]:
    """Room names, `per_shard` of them for each primary (by port)."""
    rooms: dict[int, list[str]] = {}
    while len(rooms) < 3 or min(map(len, rooms.values())) < per_shard:
        room = f"room-{uuid.uuid4().hex[:8]}"
        port = redis.owner(_slot(room)).port
        if len(rooms.setdefault(port, [])) < per_shard:
            rooms[port].append(room)
    return rooms


@pytest.fixture
def sharded(make_cluster: Callable[..., Cluster]) -> Cluster:
    return make_cluster(nodes=2, redis_shards=3, node_args=unlimited_flags())


async def _member(open_ws: Callable[[str], Awaitable[ChatClient]], url: str, name: str,
                  room: str) -> ChatClient:
    client = await open_ws(url)
    await client.auth(name)
    await client.join(room)
    return client


async def _alice_and_bob(cluster: Cluster, open_ws: Any) -> tuple[str, ChatClient, ChatClient]:
    """A new room with alice on node1 and bob on node2 (alice has seen bob join)."""
    room = f"room-{uuid.uuid4().hex[:8]}"
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
    bob = await _member(open_ws, cluster.node_ws_url(2), "bob", room)
    await alice.expect("user_joined")
    return room, alice, bob


async def _ready(http: aiohttp.ClientSession, cluster: Cluster) -> None:
    """Until every node answers /readyz with 200 (bounded)."""
    async with asyncio.timeout(20):
        for index in range(1, len(cluster.nodes) + 1):
            while True:
                async with http.get(f"{cluster.node_url(index)}/readyz") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.1)


def _shard_subscribers(redis: RedisCluster, primary: Service, room: str) -> int:
    reply = redis.cli(primary, "pubsub", "shardnumsub", KEYS.channel(room)).split()
    return int(reply[1])


async def test_each_room_is_on_its_shards_pubsub_and_reaches_every_node(
        sharded: Cluster, open_ws: Any) -> None:
    assert sharded.redis_cluster is not None
    redis = sharded.redis_cluster
    rooms = _rooms_on_every_shard(redis, 2)
    for port, names in rooms.items():
        primary = next(n for n in redis.nodes if n.port == port)
        for room in names:
            alice = await _member(open_ws, sharded.node_ws_url(1), f"a-{room}", room)
            bob = await _member(open_ws, sharded.node_ws_url(2), f"b-{room}", room)
            assert (await alice.expect("user_joined"))["userCount"] == 2
            await bob.say("hello")
            for member in (alice, bob):
                assert (await member.expect("message"))["text"] == "hello"
            assert _shard_subscribers(redis, primary, room) == 2, "both nodes, on its shard"
            others = [n for n in redis.nodes if n.running and n is not primary]
            assert all(redis.cli(n, "pubsub", "numsub", KEYS.channel(room)).split()[1] == "0"
                       for n in others), "nothing on plain Pub/Sub"


async def test_a_moved_slot_is_followed_without_losing_or_reordering(
        sharded: Cluster, open_ws: Any, http: aiohttp.ClientSession) -> None:
    redis = sharded.redis_cluster
    assert redis is not None
    room, alice, bob = await _alice_and_bob(sharded, open_ws)
    for n in range(1, 6):
        await bob.say(f"m{n}")
    source = redis.owner(_slot(room))
    target = next(n for n in redis.nodes if n is not source and redis.role(n) == "master")

    redis.move_slot(_slot(room), target)
    assert redis.owner(_slot(room)) is target
    await _ready(http, sharded)
    for n in range(6, 11):
        await bob.say(f"m{n}")
    for member in (alice, bob):
        events = [await member.expect("message") for _ in range(10)]
        assert [(e["seq"], e["text"]) for e in events] == [(n, f"m{n}") for n in range(1, 11)]
    assert _shard_subscribers(redis, target, room) == 2, "both nodes follow to the new owner"
    carol = await open_ws(sharded.ws_url)
    await carol.auth("carol")
    joined = await carol.join(room)
    assert [m["seq"] for m in joined["history"]] == list(range(1, 11))
    assert joined["userCount"] == 3, "presence moved with the slot"


async def test_a_killed_primary_is_failed_over_and_its_rooms_resume(
        sharded: Cluster, open_ws: Any, http: aiohttp.ClientSession) -> None:
    redis = sharded.redis_cluster
    assert redis is not None
    room, alice, bob = await _alice_and_bob(sharded, open_ws)
    await bob.say("before")
    for member in (alice, bob):
        assert (await member.expect("message"))["seq"] == 1
    primary = redis.owner(_slot(room))
    before = (await bob.join(room, since=1))["epoch"]

    primary.kill()
    accepted: dict[str, Any] | None = None
    async with asyncio.timeout(30):
        for attempt in range(100):  # while the replica takes over: refused, or accepted
            await bob.say(f"after{attempt}")
            event = await bob.recv(timeout=15)
            if event["type"] == "history_reset":  # the new primary forked the history
                assert event["seq"] == 1, event
                event = await bob.recv(timeout=15)
            if event["type"] == "message":
                accepted = event
                break
            # refused; or sent to the dead primary before its loss was noticed: unknown
            assert event["code"] in ("unavailable", "unknown_outcome"), event
            await asyncio.sleep(0.2)
    assert accepted is not None and accepted["seq"] == 2
    assert redis.owner(_slot(room)) is not primary
    await _ready(http, sharded)
    assert (await alice.expect("history_reset"))["seq"] == 1, "a failover is told"
    assert (await alice.expect("message"))["text"] == accepted["text"], "nothing refused arrives"
    history = (await bob.join(room, since=0))["history"]
    assert [m["text"] for m in history] == ["before", accepted["text"]], "kept across failover"
    await bob.send(type="join", room=room, since=1, epoch=before)  # from before the failover
    assert (await bob.recv())["type"] == "history_reset", "told, as the members were"
    resumed = await bob.recv()
    assert resumed["recovered"] is True, "seq 1 is the base both epochs share"
    assert [m["text"] for m in resumed["history"]] == [accepted["text"]]
