"""A local Redis Cluster: `shards` primaries with one replica each, redis-server processes on
loopback ports, joined with `redis-cli --cluster create`. For the launcher and the tests of
cluster mode; every process is one of the launcher's children, stopped by PID."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.processes import (
    LOOPBACK, Children, Service, Wrap, find_binary, free_port, redis_url, start_redis,
    wait_until,
)

CLUSTER_PORT = 6379  # each node's port when every node has a host (an address) of its own
BUS_OFFSET = 10000  # a cluster node also listens on its port + 10000 for the cluster bus
MIN_SHARDS = 3  # redis-cli --cluster create refuses fewer primaries
NODE_TIMEOUT_MS = 2000  # a primary unreachable this long is failed over to its replica


@dataclass
class RedisCluster:
    nodes: list[Service]
    password: str

    @property
    def seed_url(self) -> str:
        """What `--redis-url` names in cluster mode: any node, from which clients learn all."""
        return redis_url(self.nodes[0].port, self.password, self.nodes[0].host)

    def info(self, service: Service) -> dict[str, str]:
        return cluster_info(service, self.password)

    def ok(self, service: Service) -> bool:
        """Whether `service` says the cluster is ok (every slot served)."""
        return self.info(service).get("cluster_state") == "ok"

    def role(self, service: Service) -> str:
        """"master" or "slave", as the node itself says."""
        return _cli(service, self.password, "role").split("\n", 1)[0].strip()

    def cli(self, service: Service, *command: str) -> str:
        return _cli(service, self.password, *command)

    def owner(self, slot: int, asking: Sequence[Service] = ()) -> Service:
        """The running primary that serves `slot`, as the cluster says now (as the first of
        `asking` says: during a partition, the side that asks decides)."""
        for service in asking or self.nodes:
            if not service.running:
                continue
            for line in self.cli(service, "cluster", "nodes").splitlines():
                _, address, flags, _, _, _, _, _, *ranges = line.split()
                if "master" in flags and "fail" not in flags and _covers(ranges, slot):
                    endpoint = address.split("@")[0]
                    return next(n for n in self.nodes if f"{n.host}:{n.port}" == endpoint)
        raise LookupError(f"no primary serves slot {slot}")

    def node_id(self, service: Service) -> str:
        return self.cli(service, "cluster", "myid").strip()

    def replica_of(self, primary: Service) -> Service:
        """The node that replicates `primary`, as `primary` says."""
        primary_id = self.node_id(primary)
        for line in self.cli(primary, "cluster", "nodes").splitlines():
            _, address, flags, master, *_ = line.split()
            if "slave" in flags and master == primary_id:
                endpoint = address.split("@")[0]
                return next(n for n in self.nodes if f"{n.host}:{n.port}" == endpoint)
        raise LookupError(f"{primary.host}:{primary.port} has no replica")

    def move_slot(self, slot: int, target: Service) -> None:
        """Move a slot and its keys to the primary `target`, as `redis-cli --cluster
        reshard` does for each slot: IMPORTING/MIGRATING, MIGRATE the keys, then assign."""
        source = self.owner(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        self.cli(target, "cluster", "setslot", str(slot), "importing", source_id)
        self.cli(source, "cluster", "setslot", str(slot), "migrating", target_id)
        while keys := self.cli(source, "cluster", "getkeysinslot", str(slot), "100").split():
            self.cli(source, "migrate", target.host, str(target.port), "", "0", "5000",
                     "auth", self.password, "keys", *keys)
        for service in (target, source):
            self.cli(service, "cluster", "setslot", str(slot), "node", target_id)

    def replicas_synced(self) -> int:
        """Replicas whose link to their primary is up."""
        return sum("master_link_status:up" in _cli(node, self.password, "info", "replication")
                   for node in self.nodes if node.running)


def _covers(ranges: list[str], slot: int) -> bool:
    """Whether CLUSTER NODES slot fields ("0-5460", "5461", "[...]" migrations) hold `slot`."""
    for field in ranges:
        if field.startswith("["):
            continue
        first, _, last = field.partition("-")
        if int(first) <= slot <= int(last or first):
            return True
    return False


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A loopback port that is free, and whose cluster bus port is free too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET <= 65535 and _bindable(port + BUS_OFFSET):
            return port


def _cli(service: Service, password: str, *command: str) -> str:
    """A redis-cli command's output (the password in its environment, never its argv)."""
    done = subprocess.run(
        [find_binary("redis-cli", "redis-tools"), "-h", service.host, "-p", str(service.port),
         *command],
        env={**os.environ, "REDISCLI_AUTH": password}, capture_output=True, text=True,
        timeout=30)
    return done.stdout


def cluster_info(service: Service, password: str) -> dict[str, str]:
    """CLUSTER INFO of the node as a dict (empty when it does not answer)."""
    pairs = (line.split(":", 1) for line in _cli(service, password, "cluster", "info").split())
    return {key: value for key, *rest in pairs for value in rest}


def start_redis_cluster(run_dir: Path, shards: int, password: str,
                        children: Children, extra: Sequence[str] = (),
                        hosts: Sequence[tuple[str, Wrap]] = ()) -> RedisCluster:
    """Start 2 × `shards` nodes (with the `extra` config lines), create the cluster (a
    replica for each primary) and return once every node says the cluster is ok. On loopback
    ports, or with `hosts` (address and command wrapper each) one node per host, on
    CLUSTER_PORT (the fault tests' namespaces)."""
    settings = ["cluster-enabled yes", f"masterauth {password}",
                f"cluster-node-timeout {NODE_TIMEOUT_MS}",
                "cluster-require-full-coverage no",  # other shards serve through a failover
                *extra]
    if hosts:
        assert len(hosts) == 2 * shards, "a host for each primary and each replica"
        nodes = [start_redis(run_dir, CLUSTER_PORT, password, children, settings, address,
                             wrap) for address, wrap in hosts]
    else:
        nodes = [start_redis(run_dir, free_cluster_port(), password, children, settings)
                 for _ in range(2 * shards)]
    create = subprocess.run(
        [find_binary("redis-cli", "redis-tools"), "--cluster", "create",
         *(f"{node.host}:{node.port}" for node in nodes), "--cluster-replicas", "1",
         "--cluster-yes"],
        env={**os.environ, "REDISCLI_AUTH": password}, capture_output=True, text=True,
        timeout=60)
    if create.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout[-2000:]}"
                           f"{create.stderr[-2000:]}")
    cluster = RedisCluster(nodes, password)
    for node in nodes:
        wait_until(node, functools.partial(cluster.ok, node), timeout=30,
                   stopping=children.stopping)
    # "ok" comes before every replica has attached to its primary: a primary lost before
    # that has nobody to take over.
    wait_until(nodes[0], lambda: cluster.replicas_synced() == shards, timeout=30,
               stopping=children.stopping)
    return cluster
