"""Zero-loss operations under load: rolling restart and a killed node cost users nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from gateway.cluster import Cluster
from gateway.rolling import ClusterState, rolling_restart
from tests.conftest import unlimited_flags
from tests.zero_loss_load import PER_ROOM, Load, under_load

TOKEN = "s3cret"


async def _room_counts(cluster: Cluster) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"{cluster.http_url}/api/rooms") as r:
        return {d["name"]: d["userCount"] for d in (await r.json())["details"]}


def _cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    cluster = make_cluster(nodes=3, admin_token=TOKEN, node_args=[
        "--drain-window", "1", "--presence-grace", "1.5", *unlimited_flags(),
        "--node-ttl", "3"])
    cluster.supervise_in_background()
    return cluster


async def test_a_rolling_restart_under_load_loses_nothing(make_cluster) -> None:
    cluster = _cluster(make_cluster)
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
