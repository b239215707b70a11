"""The Socket.IO peers the fan-out benchmark compares the chat cluster with, run on the same
topology: N nodes on loopback behind one Redis, and nginx in front (over Unix sockets, as the
chat nodes are). Each peer is a few lines of server (loadtest/peers/*) installed on first use
from its registry into a git-ignored folder beside it: npm for Socket.IO 4.8 on Node.js with
`@socket.io/redis-adapter`, PyPI for python-socketio with `AsyncRedisManager`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gateway.nginx import GatewayConfig
from gateway.processes import (
    LOOPBACK, Children, Service, free_port, redis_url, start_nginx, start_redis, wait_until,
)
from gateway.run_dir import RunDir
from gateway.tokens import new_secret
from loadtest.rawclient import RawMember
from loadtest.rawsocketio import SocketIOMember

PEERS = Path(__file__).with_name("peers")
WS_PATH = "/socket.io/"


@dataclass(frozen=True)
class Peer:
    name: str
    folder: Path
    member: type[RawMember] = SocketIOMember

    def install(self) -> None:
        """Fetch the peer's packages once (a minute at most); later runs find them."""
        if self.name == "socketio-node":
            if not (self.folder / "node_modules").is_dir():
                _run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], self.folder)
        elif not (self.folder / ".venv" / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", ".venv"], self.folder)
            _run([".venv/bin/pip", "install", "-q", "-r", "requirements.txt"], self.folder)

    def argv(self) -> list[str]:
        if self.name == "socketio-node":
            return [_binary("node", "nodejs"), str(self.folder / "server.js")]
        return [str(self.folder / ".venv" / "bin" / "python"), str(self.folder / "server.py")]


def _run(argv: list[str], cwd: Path) -> None:
    print(f"installing the peer in {cwd}: {' '.join(argv)}", file=sys.stderr, flush=True)
    subprocess.run(argv, cwd=cwd, check=True, timeout=600)


def _binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed: apt-get install {package}")
    return found


PEER_SYSTEMS = {
    "socketio-node": Peer("socketio-node", PEERS / "socketio_node"),
    "socketio-py": Peer("socketio-py", PEERS / "socketio_py"),
}


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class PeerCluster:
    """Redis, the peer's nodes and nginx: the parts of `gateway.cluster.Cluster` that the
    benchmark uses, for a peer."""

    run_dir: Path
    peer: Peer
    node_count: int = 2
    redis: Service | None = None
    nodes: list[Service] = field(default_factory=list)
    nginx: Service | None = None
    gateway_port: int = 0
    children: Children = field(default_factory=Children)
    temporary: bool = False  # as Cluster's: the run directory goes when the cluster stops

    metrics = False  # no /metrics to read the nodes' own latencies from

    def __post_init__(self) -> None:
        self.run = RunDir(self.run_dir, self.temporary)

    def start(self) -> None:
        self.peer.install()
        self.run.claim()
        try:
            password = new_secret()
            self.redis = start_redis(self.run_dir, password=password, children=self.children)
            for index in range(1, self.node_count + 1):
                self.nodes.append(self._start_node(index, redis_url(self.redis.port, password)))
            self.gateway_port = free_port()
            config = GatewayConfig(
                f"{LOOPBACK}:{self.gateway_port}",
                [f"unix:{self._socket(i)}" for i in range(1, self.node_count + 1)],
                self.run_dir, temp_dir=self.run.public, instance=f"peer-{new_secret()[:12]}",
                ws_path=WS_PATH)
            config.prepare_run_dir()
            self.nginx = start_nginx(self.run_dir, config, self.gateway_port, self.children)
        except BaseException:
            self.stop()
            raise

    def _start_node(self, index: int, redis: str) -> Service:
        port = free_port()
        env = {"PORT": str(port), "REDIS_URL": redis, "UNIX_SOCKET": str(self._socket(index)),
               "NODE_ENV": "production"}
        service = self.children.spawn(f"node{index}", self.peer.argv(), port,
                                      self.run_dir / f"node{index}.log", env)
        wait_until(service, lambda: _listening(port) and self._socket(index).exists(),
                   stopping=self.children.stopping)
        self._socket(index).chmod(0o777)  # nginx's workers may run as another user
        return service

    def _socket(self, index: int) -> Path:
        return self.run.public / f"node{index}.sock"

    def stop(self) -> None:
        for service in reversed(self.children.stop()):  # nginx, the nodes, then Redis
            service.stop()
        self.run.release()

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.gateway_port}{WS_PATH}"

    def node_ws_url(self, index: int) -> str:
        return f"ws://{LOOPBACK}:{self.nodes[index - 1].port}{WS_PATH}"
