"""Starting, probing and stopping the real processes of a local cluster, by PID."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0


class MissingBinary(SystemExit):
    """A server binary is not installed; the message names the Debian package."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, package: str) -> str:
    """The path of a server binary, or a clear message naming the package to install."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        raise MissingBinary(f"{name} is not installed: run `sudo apt-get install {package}`")
    return found


@dataclass
class Service:
    """One process we started; stopped only through its own PID."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the process, wait for it, kill it if it will not go; returns its exit code."""
        if self.running:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], port: int, log_path: Path) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A session of its own: a terminal's Ctrl-C reaches the launcher only, which then
        # stops the children in order (nodes before Redis).
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Service(name, process, port, log_path)


def wait_until(service: Service, probe: Callable[[], bool], timeout: float = START_TIMEOUT
               ) -> None:
    """Poll `probe()` until it is true; fail with the service's log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.running:
            raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
        if probe():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{service.name} not ready after {timeout}s:\n{service.log_tail()}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def redis_pong(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(run_dir: Path, port: int | None = None) -> Service:
    """A throwaway redis-server on loopback, without persistence."""
    port = port or free_port()
    data_dir = run_dir / f"redis-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [find_binary("redis-server", "redis-server"), "--port", str(port),
            "--bind", LOOPBACK, "--save", "", "--appendonly", "no", "--dir", str(data_dir),
            "--daemonize", "no", "--protected-mode", "yes"]
    service = spawn("redis", argv, port, run_dir / f"redis-{port}.log")
    wait_until(service, lambda: redis_pong(port))
    return service


def start_node(run_dir: Path, node_id: str, redis_url: str | None, args: list[str],
               port: int | None = None, unix_socket: Path | None = None) -> Service:
    """One `python -m node` process; returns once it answers /readyz."""
    port = port or free_port()
    argv = [sys.executable, "-m", "node", "--host", LOOPBACK, "--port", str(port),
            "--node-id", node_id, *(["--redis-url", redis_url] if redis_url else []),
            *(["--unix-socket", str(unix_socket)] if unix_socket else []), *args]
    service = spawn(node_id, argv, port, run_dir / f"{node_id}.log")
    wait_until(service, lambda: http_ok(f"http://{LOOPBACK}:{port}/readyz"))
    return service


def start_nginx(run_dir: Path, config: str, port: int) -> Service:
    """nginx in the foreground with the rendered config; returns once it proxies /healthz."""
    config_path = run_dir / "nginx.conf"
    config_path.write_text(config)
    argv = [find_binary("nginx", "nginx-light"), "-p", str(run_dir), "-c", str(config_path),
            "-e", str(run_dir / "nginx-error.log")]
    service = spawn("nginx", argv, port, run_dir / "nginx.log")
    wait_until(service, lambda: http_ok(f"http://{LOOPBACK}:{port}/gateway-health"))
    return service


def check_nginx_config(run_dir: Path, config: str) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on a rendered config."""
    config_path = run_dir / "nginx-test.conf"
    config_path.write_text(config)
    return subprocess.run(
        [find_binary("nginx", "nginx-light"), "-t", "-p", str(run_dir), "-c", str(config_path),
         "-e", str(run_dir / "nginx-error.log")],
        capture_output=True, text=True, check=False,
    )
