"""A local cluster of real processes: Redis, N chat nodes and the nginx gateway."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.nginx import GatewayConfig, max_files
from gateway.processes import (
    LOOPBACK,
    Children,
    Service,
    Stopped,
    ensure_free,
    free_port,
    redis_config_path,
    redis_url,
    spawn_node,
    start_nginx,
    start_redis,
    stop_all,
    wait_ready,
)
from gateway.redis_cluster import RedisCluster, start_redis_cluster
from gateway.run_dir import RunDir
from gateway.tokens import new_secret
from node.config import load_settings

log = logging.getLogger("gateway")
STATE_FILE = "cluster.json"
SUPERVISE_EVERY = 0.2
# A node's drain for shutdown: its window (10 s), the last closes, the grace of presence.
NODE_STOP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
DEFAULT_REDIS_MAXMEMORY = "512mb"


@dataclass
class Cluster:
    """Starts in dependency order, stops in reverse: nodes first and gracefully. Every process
    is recorded the moment it is spawned, so a stop at any point leaves none behind."""

    run_dir: Path
    node_count: int = 3
    gateway_port: int = 0
    redis_url: str | None = None
    # Shards of a Redis Cluster to start (a replica each) instead of one Redis; with
    # `redis_url`, that URL is a seed node of a Redis Cluster already running.
    redis_shards: int = 0
    node_args: list[str] = field(default_factory=list)
    node_env: dict[str, str] = field(default_factory=dict)  # secrets for the nodes (JWT)
    # GatewayConfig fields; `websockets` (what nginx's workers are sized for) is by default
    # what the nodes may hold, and a load tool that knows its clients says how many
    gateway_limits: dict[str, Any] = field(default_factory=dict)
    redis: Service | None = None
    redis_cluster: RedisCluster | None = None
    nodes: list[Service] = field(default_factory=list)
    nginx: Service | None = None
    admin_token: str | None = None
    # The server API's admin key: each node serves the API on a loopback port of its own
    # (`api_url`); None: no API.
    api_key: str | None = None
    api_ports: dict[int, int] = field(default_factory=dict)  # node index -> its API's port
    # For the Redis this cluster starts itself: no local process may use it unasked.
    redis_password: str | None = field(default_factory=new_secret)
    # Its memory, bounded: past it, writes are refused (nodes answer `unavailable`) rather
    # than keys evicted, which would silently lose history and presence.
    redis_maxmemory: str = DEFAULT_REDIS_MAXMEMORY
    # A load tool's run directory of its own: it goes, logs and all, when the cluster stops.
    temporary: bool = False
    children: Children = field(default_factory=Children)
    # Tells this launch's nginx from any other left on the port.
    instance: str = field(default_factory=lambda: f"gateway-{new_secret()[:12]}")
    # In the nodes' socket names: the public directory cannot be listed, so only who reads
    # the nginx configuration (in the owner-only run directory) can reach a node's socket,
    # where X-Real-IP is believed.
    socket_token: str = field(default_factory=new_secret)

    def __post_init__(self) -> None:
        self.run = RunDir(self.run_dir, self.temporary)

    def start(self) -> None:
        """Start everything, or stop what started and raise (`Stopped` when `stop` came).
        A run directory held by a running launcher is refused before anything changes."""
        self.run.claim()
        try:
            if self.gateway_port:
                ensure_free(self.gateway_port)
            if self.redis_url is None and self.redis_shards:
                self.redis_password = self.redis_password or new_secret()  # a cluster has one
                self.redis_cluster = start_redis_cluster(self.run_dir, self.redis_shards,
                                                         self.redis_password, self.children,
                                                         self.redis_limits)
                self.redis_url = self.redis_cluster.seed_url
            elif self.redis_url is None:
                self.redis = start_redis(self.run_dir, password=self.redis_password,
                                         children=self.children, settings=self.redis_limits)
                self.redis_url = redis_url(self.redis.port, self.redis_password)
            # All at once, each then waited for: a node takes about a second to start.
            for index in range(1, self.node_count + 1):
                self.nodes.append(self.start_node(index, ready=False))
            for node in self.nodes:
                wait_ready(node, self.children)
            self.gateway_port = self.gateway_port or free_port()
            self.nginx = start_nginx(self.run_dir, self.gateway_config(), self.gateway_port,
                                     self.children)
        except BaseException:
            self.stop()
            raise

    def start_node(self, index: int, port: int | None = None, ready: bool = True) -> Service:
        """Start node `index` (1-based), on `port` when it is a restart; with `ready`, return
        once it answers /readyz."""
        env = {**self.node_env, **({"CHAT_ADMIN_TOKEN": self.admin_token}
                                   if self.admin_token else {})}
        api: list[str] = []
        if self.api_key:
            env["CHAT_API_KEYS"] = f"admin:{self.api_key}"
            api_port = self.api_ports.setdefault(index, free_port())
            api = [f"--api-listen={LOOPBACK}:{api_port}"]
        # nginx reaches the nodes over their Unix sockets and names the client in X-Real-IP.
        trusted = ["--trusted-proxies=unix"]
        cluster_mode = ["--redis-cluster"] if self.redis_shards else []
        service = spawn_node(self.run_dir, f"node{index}", self.redis_url,
                             [*trusted, *cluster_mode, *api, *self.node_args], port,
                             self.node_socket(index), env, self.children)
        if ready:
            wait_ready(service, self.children)
        return service

    def restart_redis(self) -> None:
        """Start an empty Redis on the port of this cluster's Redis, stopping that one if it
        still runs: a Redis restart that lost everything."""
        assert self.redis is not None
        self.redis.stop()
        self.redis = start_redis(self.run_dir, self.redis.port, self.redis_password,
                                 self.children, self.redis_limits)

    @property
    def redis_limits(self) -> list[str]:
        """Config lines of the Redis this cluster starts."""
        return [f"maxmemory {self.redis_maxmemory}", "maxmemory-policy noeviction"]

    def node_socket(self, index: int) -> Path:
        """The Unix socket node `index` (1-based) listens on for the gateway."""
        return self.run.public / f"node{index}-{self.socket_token}.sock"

    def supervise(self) -> None:
        """Restart every node that exited (a drained node exits 0), on its own port."""
        for offset, node in enumerate(self.nodes):
            if not node.running and not self.children.stopping.is_set():
                log.warning("%s exited with %s; restarting it", node.name,
                            node.process.returncode)
                try:
                    self.nodes[offset] = self.start_node(offset + 1, node.port)
                except Stopped:
                    return
                except RuntimeError as error:  # it will be tried again on the next round
                    log.error("%s", error)

    def supervise_in_background(self) -> None:
        """Keep the nodes running until `stop`, from a thread of its own. The thread lives
        until the cluster stops: the processes it restarts are tied to it (see `Children`)."""

        def loop() -> None:
            while not self.children.stopping.wait(SUPERVISE_EVERY):
                self.supervise()

        threading.Thread(target=loop, name="supervisor", daemon=True).start()

    def write_state(self) -> Path:
        """What `python -m gateway rolling-restart` needs to find this cluster (owner-only:
        it holds the admin token)."""
        path = self.run_dir / STATE_FILE
        path.touch(mode=0o600)
        path.write_text(json.dumps({
            "gateway": self.http_url,
            "nodes": [self.node_url(i) for i in range(1, len(self.nodes) + 1)],
            "admin_token": self.admin_token,
        }))
        return path

    def gateway_config(self) -> GatewayConfig:
        config = GatewayConfig(
            listen=f"{LOOPBACK}:{self.gateway_port}",
            upstreams=[f"unix:{self.node_socket(i)}" for i in range(1, len(self.nodes) + 1)],
            run_dir=self.run_dir,
            temp_dir=self.run.public,
            instance=self.instance,
            websockets=len(self.nodes) * self.node_capacity(),
        )
        config = dataclasses.replace(config, **self.gateway_limits)
        config.prepare_run_dir()
        return config

    def node_capacity(self) -> int:
        """Sockets one node may hold: its --max-connections (from `node_args` and the
        environment, as the node reads them), or the open-files limit it runs under if lower."""
        redis = {"CHAT_REDIS_URL": self.redis_url} if self.redis_url else {}
        settings = load_settings(self.node_args,
                                 env={**os.environ, **self.node_env, **redis})
        return min(settings.max_connections, max_files())

    def stop(self) -> None:
        """Nodes first, all at once (SIGTERM: they tell their clients), then nginx, then Redis,
        each within a bound and killed past it; then the state file goes, so that nothing
        later mistakes a stopped cluster for a running one."""
        started = self.children.stop()
        nodes = [service for service in started if service.name not in ("nginx", "redis")]
        stop_all(nodes, signal.SIGTERM, NODE_STOP_TIMEOUT)
        stop_all([s for s in started if s.name == "nginx"], signal.SIGQUIT, STOP_TIMEOUT)
        stop_all([s for s in started if s.name == "redis"], signal.SIGTERM, STOP_TIMEOUT)
        if self.run.held:
            (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        self.run.release()

    @property
    def redis_config(self) -> Path:
        """The config file of the Redis this cluster started, or of the first node of its
        Redis Cluster (it holds the password)."""
        first = self.redis or (self.redis_cluster.nodes[0] if self.redis_cluster else None)
        assert first is not None
        return redis_config_path(self.run_dir, first.port)

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.gateway_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.gateway_port}/ws"

    def node_url(self, index: int) -> str:
        """HTTP URL of node `index` (1-based)."""
        return f"http://{LOOPBACK}:{self.nodes[index - 1].port}"

    def api_url(self, index: int) -> str:
        """The server API of node `index` (1-based), when the cluster has an API key."""
        return f"http://{LOOPBACK}:{self.api_ports[index]}"

    def node_ws_url(self, index: int) -> str:
        """The chat WebSocket of node `index` (1-based), bypassing the gateway."""
        return f"ws://{LOOPBACK}:{self.nodes[index - 1].port}/ws"
