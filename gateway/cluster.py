"""A local cluster of real processes: Redis, N chat nodes and the nginx gateway."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

from gateway.nginx import GatewayConfig
from gateway.processes import LOOPBACK, Service, free_port, start_nginx, start_node, start_redis


@dataclass
class Cluster:
    """Starts in dependency order, stops in reverse: nodes first and gracefully."""

    run_dir: Path
    node_count: int = 3
    gateway_port: int = 0
    redis_url: str | None = None
    node_args: list[str] = field(default_factory=list)
    redis: Service | None = None
    nodes: list[Service] = field(default_factory=list)
    nginx: Service | None = None

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.redis_url is None:
                self.redis = start_redis(self.run_dir)
                self.redis_url = f"redis://{LOOPBACK}:{self.redis.port}/0"
            for index in range(1, self.node_count + 1):
                self.nodes.append(self.start_node(index))
            self.gateway_port = self.gateway_port or free_port()
            self.nginx = start_nginx(self.run_dir, self.gateway_config().render(),
                                     self.gateway_port)
        except BaseException:
            self.stop()
            raise

    def start_node(self, index: int, port: int | None = None) -> Service:
        """Start node `index` (1-based), on `port` when it is a restart."""
        return start_node(self.run_dir, f"node{index}", self.redis_url, self.node_args, port)

    def gateway_config(self) -> GatewayConfig:
        config = GatewayConfig(
            listen=f"{LOOPBACK}:{self.gateway_port}",
            upstreams=[f"{LOOPBACK}:{node.port}" for node in self.nodes],
            run_dir=self.run_dir,
        )
        config.prepare_run_dir()
        return config

    def stop(self) -> None:
        """Nodes first (SIGTERM: they tell their clients), then nginx, then Redis."""
        for node in self.nodes:
            if node.running:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        if self.nginx is not None:
            self.nginx.stop(signal.SIGQUIT)
        if self.redis is not None:
            self.redis.stop()

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.gateway_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.gateway_port}/ws"

    def node_url(self, index: int) -> str:
        """HTTP URL of node `index` (1-based)."""
        return f"http://{LOOPBACK}:{self.nodes[index - 1].port}"

    def node_ws_url(self, index: int) -> str:
        """The chat WebSocket of node `index` (1-based), bypassing the gateway."""
        return f"ws://{LOOPBACK}:{self.nodes[index - 1].port}/ws"
