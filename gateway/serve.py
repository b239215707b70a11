"""`python -m gateway serve`: the gateway in a container, in front of a service whose replicas
come and go (`docker compose up --scale node=N`).

Compose gives a service's name one DNS address per replica, but open-source nginx resolves an
upstream's name only when it loads its configuration: replicas added later would never get a
client. So this process resolves the name itself, renders the configuration with the same
renderer as the local launcher, and reloads nginx (SIGHUP: new workers take new connections,
open WebSockets stay on the old workers until they close) whenever the set changes."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from gateway.nginx import GatewayConfig
from gateway.processes import die_with_parent, find_binary

log = logging.getLogger("gateway")


def replicas(service: str, port: int) -> list[str]:
    """`address:port` of every replica `service` resolves to now; none while it resolves
    to none (the service not started yet, or scaled to zero)."""
    try:
        infos = socket.getaddrinfo(service, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    addresses = {str(info[4][0]) for info in infos}
    return sorted(f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses)


class Gateway:
    """nginx, configured for the replicas it was last told about."""

    def __init__(self, config_for: Callable[[list[str]], GatewayConfig], run_dir: Path) -> None:
        self._config_for = config_for
        self._config_path = run_dir / "nginx.conf"
        self._run_dir = run_dir
        self.upstreams: list[str] = []
        self._nginx: subprocess.Popen[bytes] | None = None

    def start(self, upstreams: list[str]) -> None:
        self._write(upstreams)
        argv = [find_binary("nginx", "nginx-light"), "-p", str(self._run_dir),
                "-c", str(self._config_path), "-e", "stderr"]
        self._nginx = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        log.info("nginx started in front of %s", ", ".join(upstreams))

    def follow(self, upstreams: list[str]) -> None:
        """Reload nginx for a new set of replicas; an empty set keeps the last one (nginx
        needs at least one server, and skips dead ones by itself)."""
        if upstreams and upstreams != self.upstreams:
            self._write(upstreams)
            assert self._nginx is not None
            self._nginx.send_signal(signal.SIGHUP)
            log.info("replicas changed: nginx reloaded for %s", ", ".join(upstreams))

    @property
    def exit_code(self) -> int | None:
        """None while nginx runs."""
        return None if self._nginx is None else self._nginx.poll()

    def stop(self) -> int:
        if self._nginx is None:
            return 0
        self._nginx.terminate()  # fast shutdown: clients reconnect through another gateway
        return self._nginx.wait()

    def _write(self, upstreams: list[str]) -> None:
        config = self._config_for(upstreams)
        config.prepare_run_dir()
        self._config_path.write_text(config.render())
        self.upstreams = upstreams


def serve(gateway: Gateway, resolve: Callable[[], list[str]], every: float,
          stopping: threading.Event) -> int:
    """Wait for the first replica, run nginx, follow the replicas until `stopping` is set or
    nginx exits; returns the exit code."""
    upstreams = resolve()
    while not upstreams:
        log.info("waiting for a replica to resolve ...")
        if stopping.wait(every):
            return 0
        upstreams = resolve()
    gateway.start(upstreams)
    while not stopping.wait(every):
        if (code := gateway.exit_code) is not None:
            log.error("nginx exited with %s", code)
            return code or 1
        gateway.follow(resolve())
    return gateway.stop()
