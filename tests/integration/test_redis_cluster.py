"""The local Redis Cluster the launcher starts: 3 primaries with a replica each, and a
primary killed outright is replaced by its replica."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.processes import Children
from gateway.redis_cluster import RedisCluster, start_redis_cluster
from gateway.tokens import new_secret

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    children = Children()
    try:
        yield start_redis_cluster(tmp_path, 3, new_secret(), children)
    finally:
        for service in children.stop():
            service.stop()


def test_three_primaries_each_with_a_replica_cover_every_slot(
        redis_cluster: RedisCluster) -> None:
    info = redis_cluster.info(redis_cluster.nodes[0])
    assert (info["cluster_state"], info["cluster_size"], info["cluster_known_nodes"],
            info["cluster_slots_assigned"]) == ("ok", "3", "6", "16384")
    roles = sorted(redis_cluster.role(node) for node in redis_cluster.nodes)
    assert roles == ["master"] * 3 + ["slave"] * 3


@pytest.mark.timeout(60)
def test_a_killed_primary_is_failed_over_to_its_replica(redis_cluster: RedisCluster) -> None:
    primary = next(n for n in redis_cluster.nodes if redis_cluster.role(n) == "master")
    primary.kill()
    others = [n for n in redis_cluster.nodes if n is not primary]
    deadline = time.monotonic() + 30
    while not (sum(redis_cluster.role(n) == "master" for n in others) == 3
               and all(redis_cluster.info(n).get("cluster_state") == "ok" for n in others)):
        assert time.monotonic() < deadline, "no replica took over"
        time.sleep(0.2)
