"""Allowed origins and the public host, on a real node and through the gateway."""

from __future__ import annotations

import json

import pytest

from gateway.cluster import Cluster
from tests.frames import upgrade


@pytest.fixture
def cluster(make_cluster) -> Cluster:
    return make_cluster(1, node_args=["--allowed-origins=https://app.example"])


def _ports(cluster: Cluster) -> list[int]:
    return [cluster.nodes[0].port, cluster.gateway_port]


async def test_clients_without_an_origin_and_listed_origins_upgrade(cluster: Cluster) -> None:
    for port in _ports(cluster):
        assert (await upgrade(port))[0] == 101
        assert (await upgrade(port, "Origin: https://app.example\r\n"))[0] == 101


async def test_a_page_from_its_own_site_upgrades(cluster: Cluster) -> None:
    for port in _ports(cluster):
        headers = f"Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        assert (await upgrade(port, headers))[0] == 101


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_page_from_another_site_is_refused_before_the_upgrade(cluster: Cluster,
                                                                      origin: str) -> None:
    for port in _ports(cluster):
        status, rest = await upgrade(port, f"Origin: {origin}\r\n")
        assert status == 403
        assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"] == "forbidden"


async def test_any_origin_only_when_told(make_cluster) -> None:
    cluster = make_cluster(1, node_args=["--allowed-origins=*"])
    assert (await upgrade(cluster.nodes[0].port, "Origin: https://anyone.example\r\n"))[0] == 101


async def test_a_public_host_refuses_any_other_host(make_cluster) -> None:
    cluster = make_cluster(1, node_args=["--public-host=chat.example"])
    port = cluster.nodes[0].port
    assert (await upgrade(port, "Host: chat.example\r\n"))[0] == 101
    assert (await upgrade(port, f"Host: 127.0.0.1:{port}\r\n"))[0] == 421
