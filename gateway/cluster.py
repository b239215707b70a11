"""A local cluster of real processes: Redis, N chat nodes and the nginx gateway."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gateway.nginx import GatewayConfig
from gateway.processes import LOOPBACK, Service, free_port, start_nginx, start_node, start_redis

log = logging.getLogger("gateway")
STATE_FILE = "cluster.json"
SUPERVISE_EVERY = 0.2


@dataclass
class Cluster:
    """Starts in dependency order, stops in reverse: nodes first and gracefully."""

    run_dir: Path
    node_count: int = 3
    gateway_port: int = 0
    redis_url: str | None = None
    node_args: list[str] = field(default_factory=list)
    gateway_limits: dict[str, int] = field(default_factory=dict)  # GatewayConfig fields
    redis: Service | None = None
    nodes: list[Service] = field(default_factory=list)
    nginx: Service | None = None
    admin_token: str | None = None
    socket_dir: Path | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # nginx reaches the nodes over Unix sockets (cheaper than loopback TCP), in a directory
        # its workers may enter whatever the run directory's permissions (they may run as
        # another user).
        self.socket_dir = Path(tempfile.mkdtemp(prefix="chat-sockets-"))
        self.socket_dir.chmod(0o755)
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
        # `--flag=value`: a generated token may begin with "-".
        admin = [f"--admin-token={self.admin_token}"] if self.admin_token else []
        # nginx reaches the nodes over their Unix sockets and names the client in X-Real-IP.
        trusted = ["--trusted-proxies=unix"]
        return start_node(self.run_dir, f"node{index}", self.redis_url,
                          [*admin, *trusted, *self.node_args], port, self.node_socket(index))

    def node_socket(self, index: int) -> Path:
        """The Unix socket node `index` (1-based) listens on for the gateway."""
        assert self.socket_dir is not None
        return self.socket_dir / f"node{index}.sock"

    def supervise(self) -> None:
        """Restart every node that exited (a drained node exits 0), on its own port."""
        for offset, node in enumerate(self.nodes):
            if not node.running and not self._stopping.is_set():
                log.warning("%s exited with %s; restarting it", node.name,
                            node.process.returncode)
                self.nodes[offset] = self.start_node(offset + 1, node.port)

    def supervise_in_background(self) -> None:
        """Keep the nodes running until `stop`, from a thread of its own."""

        def loop() -> None:
            while not self._stopping.wait(SUPERVISE_EVERY):
                self.supervise()

        threading.Thread(target=loop, name="supervisor", daemon=True).start()

    def write_state(self) -> Path:
        """What `python -m gateway rolling-restart` needs to find this cluster."""
        path = self.run_dir / STATE_FILE
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
            **self.gateway_limits,
        )
        config.prepare_run_dir()
        return config

    def stop(self) -> None:
        """Nodes first (SIGTERM: they tell their clients), then nginx, then Redis."""
        self._stopping.set()
        for node in self.nodes:
            if node.running:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        if self.nginx is not None:
            self.nginx.stop(signal.SIGQUIT)
        if self.redis is not None:
            self.redis.stop()
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

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
