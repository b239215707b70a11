"""The gateway's share of the defences, through a real nginx in front of real nodes."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.cluster import Cluster
from node.config import DEFAULT_MAX_HEAD
from tests.frames import upgrade
from tests.conftest import unlimited_flags


@pytest.fixture
def cluster(make_cluster) -> Cluster:
    return make_cluster(1, node_args=[*unlimited_flags(), "--max-connections-per-address", "3"],
                        gateway_limits={"ws_per_address": 2, "api_rate": 1, "api_burst": 2})


async def _upgrade_status(port: int, extra: str = "") -> int:
    return (await upgrade(port, extra))[0]


async def test_one_address_holds_at_most_its_share_of_websockets(cluster, http) -> None:
    held = [await http.ws_connect(cluster.ws_url) for _ in range(2)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(cluster.ws_url)
    assert refused.value.status == 429
    for ws in held:
        await ws.close()


async def test_requests_over_the_rate_get_429(cluster, http) -> None:
    statuses = []
    for _ in range(6):
        async with http.get(f"{cluster.http_url}/healthz") as response:
            statuses.append(response.status)
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]


async def test_admin_routes_and_metrics_are_not_reachable_through_the_gateway(cluster, http) -> None:
    async with http.post(f"{cluster.http_url}/admin/drain") as response:
        assert response.status == 404
    async with http.get(f"{cluster.http_url}/metrics") as response:
        assert response.status == 404, "metrics are read on a node's own address"
    async with http.get(f"{cluster.http_url}/gateway-health") as response:
        assert "nginx/" not in response.headers.get("Server", "")


@pytest.mark.parametrize("size, accepted", [(DEFAULT_MAX_HEAD - 1024, True),
                                           (DEFAULT_MAX_HEAD + 1024, False)])
async def test_node_and_gateway_agree_on_a_large_cookie(cluster, size: int, accepted: bool
                                                         ) -> None:
    """Both ends take their head limit from one setting (--max-head): a cookie the node
    accepts passes the gateway, and one it refuses is refused either way."""
    cookie = "Cookie: c=" + "z" * size + "\r\n"
    direct = await _upgrade_status(cluster.nodes[0].port, cookie)
    through = await _upgrade_status(cluster.gateway_port, cookie)
    if accepted:
        assert (direct, through) == (101, 101)
    else:
        assert direct == 431 and through in (400, 431), (direct, through)


async def test_the_node_counts_the_client_the_gateway_names(cluster, http) -> None:
    """Through nginx every socket comes from the gateway; the node's per-address limit
    applies to the client nginx names in X-Real-IP (here 127.0.0.1 for all)."""
    direct = [await http.ws_connect(cluster.node_ws_url(1)) for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(cluster.ws_url)
    assert refused.value.status == 429
    for ws in direct:
        await ws.close()
