"""Zero-loss operations under load: rolling restart and a killed node cost users nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import aiohttp
import pytest
from redis.crc import key_slot

from gateway.cluster import Cluster
from gateway.rolling import ClusterState, rolling_restart
from tests.conftest import REDIS_SHARDS, unlimited_flags
from node.backends.redis.support import RedisKeys
from tests.zero_loss_load import PER_ROOM, ROOMS, Load, under_load

pytestmark = pytest.mark.slow
TOKEN = "s3cret"


async def _room_counts(cluster: Cluster) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"{cluster.http_url}/api/rooms") as r:
        return {d["name"]: d["userCount"] for d in (await r.json())["details"]}


def _cluster(make_cluster: Callable[..., Cluster], redis_shards: int = 0) -> Cluster:
    cluster = make_cluster(nodes=3, admin_token=TOKEN, redis_shards=redis_shards, node_args=[
        "--drain-window", "1", "--presence-grace", "1.5", *unlimited_flags(),
        "--node-ttl", "3"])
    cluster.supervise_in_background()
    return cluster


@pytest.mark.parametrize("redis_shards", REDIS_SHARDS)
async def test_a_rolling_restart_under_load_loses_nothing(make_cluster, redis_shards: int
                                                          ) -> None:
    cluster = _cluster(make_cluster, redis_shards)
    state = ClusterState([cluster.node_url(i) for i in (1, 2, 3)], TOKEN)
    load = Load(cluster)
    await load.start()
    try:
        await asyncio.sleep(1.0)
        load.presence_changes.clear()  # the initial joins
        await asyncio.to_thread(rolling_restart, state, lambda line: None)
        await asyncio.sleep(1.0)
        await load.finish()
        load.assert_exactly_once_in_order()
        assert all(c.connections >= 2 for c in load.everyone), "every node was restarted"
        assert load.presence_changes == [], "moving users neither left nor joined"
        counts = await _room_counts(cluster)
        assert {room: counts[room] for room in load.rooms} == dict.fromkeys(load.rooms, PER_ROOM)
    finally:
        await load.close()


async def test_a_killed_node_under_load_loses_nothing(make_cluster) -> None:
    cluster = _cluster(make_cluster)

    async def kill_node2() -> None:
        cluster.nodes[1].kill()

    load = await under_load(cluster, kill_node2)
    moved = [c for c in load.everyone if c.connections >= 2]
    assert moved, "the killed node's clients reconnected elsewhere"


async def test_a_killed_redis_primary_under_load_loses_nothing(make_cluster) -> None:
    """SIGKILL of the Redis Cluster primary that serves most of the load's rooms: its replica
    takes over, the nodes move those rooms' subscriptions to it and repair what they missed;
    every acknowledged message reaches every client once, in order, none unrecovered. A
    client whose send the primary took without answering resumes to find out, across the
    failover's fork."""
    cluster = _cluster(make_cluster, redis_shards=3)
    redis = cluster.redis_cluster
    assert redis is not None
    slots = [key_slot(RedisKeys("chat").channel(f"load{r}").encode()) for r in range(ROOMS)]
    owners = Counter(redis.owner(slot).port for slot in slots)
    busiest = next(n for n in redis.nodes if n.port == owners.most_common(1)[0][0])

    async def kill_primary() -> None:
        busiest.kill()

    load = await under_load(cluster, kill_primary)
    assert busiest.port not in {redis.owner(slot).port for slot in slots}, "failed over"
    reconnected = {c for c in load.everyone if c.connections > 1}
    assert reconnected <= load.unsure, "only a send to the killed primary, unanswered"
