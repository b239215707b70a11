"""Graceful drain: readiness drops at once, clients are told and closed over the window."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from gateway.cluster import Cluster
from node.runtime import NODE

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_admin_routes_are_off_without_a_token(node) -> None:
    assert (await node.post("/admin/drain", headers=AUTH)).status == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": TOKEN}])
async def test_drain_needs_the_bearer_token(make_node, headers: dict[str, str]) -> None:
    node = await make_node(admin_token=TOKEN)
    assert (await node.post("/admin/drain?force=1", headers=headers)).status == 401
    assert (await node.get("/readyz")).status == 200


async def test_the_last_ready_node_drains_only_when_forced(make_node) -> None:
    node = await make_node(admin_token=TOKEN)
    refused = await node.post("/admin/drain", headers=AUTH)
    assert refused.status == 409 and (await refused.json())["error"] == "last_ready_node"
    assert (await node.post("/admin/drain?force=1", headers=AUTH)).status == 202
    again = await node.post("/admin/drain?force=1", headers=AUTH)
    assert again.status == 409 and (await again.json())["error"] == "already_draining"


async def test_a_drain_fails_readiness_refuses_upgrades_and_closes_everyone(
    make_node, connect
) -> None:
    node = await make_node(admin_token=TOKEN, drain_window=0.6, presence_grace=0.5)
    clients = [await connect(node) for _ in range(3)]
    for n, client in enumerate(clients):
        await client.auth(f"user{n}")
    assert (await node.post("/admin/drain?force=1", headers=AUTH)).status == 202
    ready = await node.get("/readyz")
    assert ready.status == 503 and (await ready.json())["reason"] == "draining"
    assert (await (await node.get("/api/status")).json())["draining"] is True
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(node)
    assert refused.value.status == 503

    loop = asyncio.get_running_loop()

    async def told_and_closed(client) -> float:
        notice = await client.skip_to("server_shutdown")
        assert notice["reconnect"] is True and 0 <= notice["retryAfterMs"] <= 1000
        assert await client.expect_close() == (1001, "Server shutting down")
        return loop.time()

    closed_at = await asyncio.gather(*(told_and_closed(c) for c in clients))
    assert max(closed_at) - min(closed_at) >= 0.2, "closes are spread over the window"
    await asyncio.wait_for(node.server.app[NODE].drain.finished.wait(), 5)


async def test_only_one_node_drains_at_a_time(make_cluster, http: aiohttp.ClientSession,
                                              open_ws) -> None:
    cluster: Cluster = make_cluster(nodes=3, admin_token=TOKEN,  # holders' names: kept briefly
                                    node_args=["--drain-window", "2", "--presence-grace", "0.5"])
    holder = await open_ws(cluster.node_ws_url(1))  # keeps a drain busy for its window
    await holder.auth("holder")
    holder2 = await open_ws(cluster.node_ws_url(2))
    await holder2.auth("holder2")

    async def drain(index: int) -> tuple[int, dict]:
        async with http.post(f"{cluster.node_url(index)}/admin/drain", headers=AUTH) as reply:
            return reply.status, await reply.json()

    answers = await asyncio.gather(drain(1), drain(2))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202, 409], answers
    refusal = next(body for status, body in answers if status == 409)
    assert refusal["error"] == "drain_in_progress"


async def test_upgrades_during_a_drain_land_on_other_nodes_and_the_node_exits(
    make_cluster, open_ws, http: aiohttp.ClientSession
) -> None:
    cluster: Cluster = make_cluster(nodes=3, admin_token=TOKEN,
                                    node_args=["--drain-window", "3"])
    early = await open_ws(cluster.node_ws_url(1))
    await early.auth("early")
    async with http.post(f"{cluster.node_url(1)}/admin/drain", headers=AUTH) as reply:
        assert reply.status == 202
    for n in range(6):
        client = await open_ws(cluster.ws_url)
        assert (await client.auth(f"late{n}"))["node"] != "node1"
    await early.skip_to("server_shutdown")
    assert (await early.expect_close())[0] == 1001
    exit_code = await asyncio.to_thread(cluster.nodes[0].process.wait, 15)
    assert exit_code == 0


async def test_a_whole_cluster_stopping_drains_every_node_at_once(make_cluster,
                                                                   open_ws) -> None:
    """Each node stopping for good drains at once; waiting for the drain lock in turn would
    stop three nodes in three windows and bounce clients from one dying node to the next."""
    window = 3.0
    cluster: Cluster = make_cluster(nodes=3, node_args=["--drain-window", str(window),
                                                        "--presence-grace", "0.5"])
    clients = []
    for index in (1, 2, 3):
        client = await open_ws(cluster.node_ws_url(index))
        await client.auth(f"member{index}")
        clients.append(client)
    started = asyncio.get_running_loop().time()
    for node in cluster.nodes:
        node.process.send_signal(signal.SIGTERM)
    for client in clients:
        await client.skip_to("server_shutdown")
        assert (await client.expect_close())[0] == 1001
    codes = await asyncio.gather(*(asyncio.to_thread(node.process.wait, 30)
                                   for node in cluster.nodes))
    assert codes == [0, 0, 0]
    assert asyncio.get_running_loop().time() - started < 2 * window  # one window, not three
