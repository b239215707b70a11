"""The hosts of the fault tests (issue 29) as a context manager, for the suite and for
`python -m loadtest.partitions`: Redis (one, or a Redis Cluster of 3 primaries and 3
replicas), two nodes and the gateway (nginx), each on a network namespace of its own
(tests/fault_net.py), and the checker's verdict in one line."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.nginx import GatewayConfig
from gateway.processes import (
    Children, Service, redis_url, start_nginx, start_node, start_redis, stop_all,
)
from gateway.redis_cluster import RedisCluster, start_redis_cluster
from gateway.tokens import new_secret
from node.backends.redis.support import RedisKeys
from tests.checker import Verdict
from tests.fault_net import Host, Network, harness_leftovers

REDIS_PORT = 6379
NODE_PORT = 8000
GATEWAY_PORT = 8080
# The nodes ping every second and close a client silent for 3 (a path cut without a close);
# the clients ping every second too and give up on a pong after half of it.
PINGS = ["--ping-interval", "1", "--ping-timeout", "3"]
CLIENT_HEARTBEAT = 1.0


@dataclass
class Hosts:
    """Redis (one, or a Redis Cluster of 3 primaries and 3 replicas), two nodes and the
    gateway (nginx), each on a host of its own."""

    net: Network
    redis: list[Host]
    nodes: list[Host]
    node_services: list[Service]
    gateway: Host
    cluster: RedisCluster | None = None

    def ws_url(self, index: int) -> str:
        return f"ws://{self.nodes[index].address}:{NODE_PORT}/ws"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.gateway.address}:{GATEWAY_PORT}/ws"

    def redis_of(self, room: str) -> Host:
        """The host of the Redis that serves `room` (its shard's primary, in a cluster)."""
        if self.cluster is None:
            return self.redis[0]
        slot = int(self.cluster.cli(self.cluster.nodes[0], "cluster", "keyslot",
                                    RedisKeys("chat").seq(room)))
        address = self.cluster.owner(slot).host
        return next(host for host in self.redis if host.address == address)


@contextmanager
def fault_hosts(kind: str, run_dir: Path, node_flags: list[str]) -> Iterator[Hosts]:
    """The hosts, with one Redis (`kind` "redis") or a Redis Cluster ("redis-cluster"), the
    nodes started with `node_flags`; every process, namespace and rule gone on exit."""
    children = Children()
    with Network() as net:
        try:
            password = new_secret()
            cluster: RedisCluster | None = None
            if kind == "redis-cluster":
                redis = [net.add_host(f"redis{n}") for n in range(1, 7)]
                cluster = start_redis_cluster(run_dir, 3, password, children, hosts=[
                    (host.address, host.argv) for host in redis])
                url = cluster.seed_url
            else:
                redis = [net.add_host("redis")]
                start_redis(run_dir, REDIS_PORT, password, children, host=redis[0].address,
                            wrap=redis[0].argv)
                url = redis_url(REDIS_PORT, password, redis[0].address)
            nodes = [net.add_host(f"node{n}") for n in (1, 2)]
            cluster_flags = ["--redis-cluster"] if cluster else []
            services = [start_node(run_dir, host.name, url,
                                   [*node_flags, *cluster_flags, *PINGS],
                                   port=NODE_PORT, children=children, host=host.address,
                                   wrap=host.argv)
                        for host in nodes]
            gateway = net.add_host("gateway")
            config = GatewayConfig(f"{gateway.address}:{GATEWAY_PORT}",
                                   [f"{host.address}:{NODE_PORT}" for host in nodes],
                                   run_dir / "gateway", instance=f"partitions-{os.getpid()}")
            config.prepare_run_dir()
            start_nginx(run_dir / "gateway", config, GATEWAY_PORT, children,
                        host=gateway.address, wrap=gateway.argv)
            yield Hosts(net, redis, nodes, services, gateway, cluster)
        finally:
            services = children.stop()
            for service in services:
                if service.running:  # a paused one must be let go to stop
                    service.signal(signal.SIGCONT)
            stop_all(services, signal.SIGTERM, 15.0)
    assert not [name for name in harness_leftovers() if str(os.getpid()) in name]


def report(verdict: Verdict) -> str:
    def counts(by_member: dict[str, list[str]]) -> dict[str, int]:
        return {name: len(texts) for name, texts in by_member.items() if texts}

    return (f"acknowledged {verdict.acknowledged}, lost unreported {counts(verdict.lost)}, "
            f"duplicates {counts(verdict.duplicates)}, disorder {verdict.disorder}, longest "
            f"without an acknowledgement (s) {verdict.unavailable}, refusals "
            f"{dict(verdict.refusals)}, reported {verdict.reported}, seqs naming two texts "
            f"{sorted(seq for _, seq in verdict.conflicts)}, every member list right "
            f"{verdict.view_complete} s after the fault (the last wrong: "
            f"{'; '.join(verdict.last_wrong_views) or 'none'})")
