"""Rendering the nginx gateway configuration from its template."""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

from node.config import DEFAULT_MAX_HEAD

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
MAX_FILES = 65536  # nginx's worker_rlimit_nofile unless the hard limit is lower
MAX_CONN_LIMIT = 65535  # the largest limit_conn nginx takes
# reuseport spreads connections over the workers only about evenly (15,926 and 16,096 files
# of two workers at 16,000 WebSockets): workers are sized for a tenth more than they carry
WORKER_SPARE = 1.1


def max_files() -> int:
    """Files an nginx worker may open: MAX_FILES, or the hard limit it runs under if lower
    (raising that needs privileges a container or an unprivileged user lacks)."""
    return min(MAX_FILES, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: str
    upstreams: list[str]
    run_dir: Path
    workers: str = "auto"  # one nginx worker per core, or more for `websockets`
    # Each worker opens up to this many files and holds as many connections: a WebSocket
    # through the gateway takes two (the client's and the node's).
    max_files: int = field(default_factory=max_files)
    websockets: int = 0  # WebSockets the nodes behind may hold together (0: not known)
    proxy_timeout: int = 120
    max_fails: int = 3
    fail_timeout: int = 5
    max_head: int = DEFAULT_MAX_HEAD  # the nodes' --max-head
    ws_per_address: int = 1000  # WebSockets one client address may hold through the gateway
    api_rate: int = 50  # other requests per second one client address may make
    api_burst: int = 100
    temp_dir: Path | None = None  # where workers buffer bodies (default run_dir); they may
    # run as another user, so the launcher gives them a directory they may enter
    instance: str = "gateway"  # /gateway-health answers "ok <instance>"
    ws_path: str = "/ws"  # where WebSockets are upgraded (a benchmark peer has its own)
    error_log: str | None = None  # default run_dir/nginx-error.log; "stderr" in a container

    def __post_init__(self) -> None:
        if not 0 < self.ws_per_address <= MAX_CONN_LIMIT:  # nginx would refuse to start
            raise ValueError(f"ws_per_address must be 1 to {MAX_CONN_LIMIT}, "
                             f"not {self.ws_per_address}")

    def render(self) -> str:
        """The nginx.conf text: least_conn over the nodes, passive health checks for HTTP."""
        values = {
            "workers": self.worker_processes,
            "max_files": str(self.max_files),
            "run_dir": str(self.run_dir),
            "temp_dir": str(self._temp_dir),
            "error_log": self.error_log or str(self.run_dir / "nginx-error.log"),
            "instance": self.instance,
            "ws_path": self.ws_path,
            "ws_servers": self._servers("max_fails=0"),
            "api_servers": self._servers(
                f"max_fails={self.max_fails} fail_timeout={self.fail_timeout}s"),
            "listen": self.listen,
            "tries": str(len(self.upstreams)),
            "proxy_timeout": str(self.proxy_timeout),
            "max_head": str(self.max_head),
            "ws_per_address": str(self.ws_per_address),
            "api_rate": str(self.api_rate),
            "api_burst": str(self.api_burst),
        }
        text = TEMPLATE.read_text()
        for name, value in values.items():
            text = text.replace("{{" + name + "}}", value)
        return text

    @property
    def worker_processes(self) -> str:
        """`workers`; for "auto", one per core, or more when that many workers' files could
        not carry the `websockets` the nodes may hold (two files each: the client's and the
        node's), as on a machine whose open-files limit is low."""
        if self.workers != "auto":
            return self.workers
        needed = math.ceil(2 * self.websockets * WORKER_SPARE / self.max_files)
        return str(needed) if needed > len(os.sched_getaffinity(0)) else "auto"

    def _servers(self, options: str) -> str:
        return "\n".join(f"        server {upstream} {options};" for upstream in self.upstreams)

    @property
    def _temp_dir(self) -> Path:
        return self.temp_dir or self.run_dir

    def prepare_run_dir(self) -> None:
        """nginx wants its temp directories to exist."""
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self._temp_dir / sub).mkdir(parents=True, exist_ok=True)
