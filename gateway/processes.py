"""Starting, probing and stopping the real processes of a local cluster, by PID."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.nginx import GatewayConfig

log = logging.getLogger("gateway")
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
Wrap = Callable[[list[str]], list[str]]  # a command line as it is run (inside a namespace)
_libc = ctypes.CDLL(None, use_errno=True)


class MissingBinary(SystemExit):
    """A server binary is not installed; the message names the Debian package."""


class Stopped(Exception):
    """The launcher is stopping: a process being started is not waited for."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class PortInUse(SystemExit):
    """A port the launcher was told to use is taken (by an earlier launch, say)."""


def ensure_free(port: int) -> None:
    """Refuse to start on a taken port, instead of being answered by whoever holds it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as error:
            holder = port_holder(port) or "a process this user cannot see"
            raise PortInUse(f"port {port} on {LOOPBACK} is in use ({error.strerror}) by "
                            f"{holder}: is another cluster still running? Stop it, or pick "
                            "--port") from None


def port_holder(port: int) -> str | None:
    """`pid N (command)` of the process listening on TCP `port`, when /proc shows it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                pid = fd_dir.parent.name
                return f"pid {pid} ({(fd_dir.parent / 'comm').read_text().strip()})"
    return None


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
    host: str = LOOPBACK  # the address it listens on (another in a fault test's namespace)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the process, wait for it, kill it if it will not go; returns its exit code."""
        self.signal(signum)
        return self.wait_or_kill(time.monotonic() + timeout)

    def signal(self, signum: int) -> None:
        if self.running:
            self.process.send_signal(signum)

    def wait_or_kill(self, deadline: float) -> int:
        """Wait for the process until `deadline`; past it, say so and SIGKILL it with its
        process group (nginx's workers outlive a master killed alone)."""
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop in time; killing it (its log: %s)",
                        self.name, self.process.pid, self.log_path)
            self.kill_group()
            self.process.wait()
        return self.process.returncode

    def kill_group(self) -> None:
        """SIGKILL the process and every process of its group (each child of `Children`
        leads a group of its own), while it is not reaped: its pid is still ours."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL: the process (and its group) gets no chance to clean up."""
        self.kill_group()
        self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_all(services: Sequence[Service], signum: int, timeout: float) -> None:
    """Signal every service at once and give them all the same `timeout` to exit."""
    for service in services:
        service.signal(signum)
    deadline = time.monotonic() + timeout
    for service in services:
        service.wait_or_kill(deadline)


def stop_on_signals(stopping: threading.Event,
                    signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                    ) -> None:
    """Set `stopping` when one of `signums` arrives; call from the main thread. Not from a
    Python signal handler: a handler runs in the main thread between any two bytecodes, so
    possibly while that thread holds the event's own lock inside `stopping.wait()`, and its
    `set()` would then wait for that lock for ever (a launcher that never stops). The
    interpreter writes each signal to a socket instead, and a thread of its own sets the
    event."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    for signum in signums:
        signal.signal(signum, lambda *_: None)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        with reader, writer:  # the writer lives as long as this thread
            reader.recv(1)
            stopping.set()

    threading.Thread(target=watch, name="stop-signals", daemon=True).start()


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Have this process signalled when the thread that started it ends (Linux)."""
    _libc.prctl(PR_SET_PDEATHSIG, signum)


def die_with_launcher(launcher: int) -> Callable[[], None]:
    """Run in the child before exec: SIGTERM it when the thread that started it ends — the
    launcher killed outright (SIGKILL) included, where no handler of ours runs."""

    def arm() -> None:
        die_with_parent()
        if os.getppid() != launcher:  # the launcher died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


class Children:
    """Every process one launcher started, recorded the moment it exists, so that every exit
    path — a stop during start-up or during a restart included — can stop them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: list[Service] = []
        self.stopping = threading.Event()

    def spawn(self, name: str, argv: list[str], port: int, log_path: Path,
              env: dict[str, str] | None = None, host: str = LOOPBACK) -> Service:
        """Start a process, unless the launcher is stopping (then `Stopped`)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, log_path.open("ab") as log:
            if self.stopping.is_set():
                raise Stopped(name)
            # A session of its own: a terminal's Ctrl-C or hang-up reaches the launcher only,
            # which then stops the children in order (nodes before Redis).
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **(env or {})},
                preexec_fn=die_with_launcher(os.getpid()),
            )
            service = Service(name, process, port, log_path, host)
            self._services.append(service)
            return service

    def services(self) -> list[Service]:
        """Every process started so far."""
        with self._lock:
            return list(self._services)

    def stop(self) -> list[Service]:
        """Refuse new processes from now on; returns every process started so far."""
        with self._lock:
            self.stopping.set()
            return list(self._services)


def wait_until(service: Service, probe: Callable[[], bool], timeout: float = START_TIMEOUT,
               stopping: threading.Event | None = None) -> None:
    """Poll `probe()` until it is true; fail with the service's log if it dies or stalls, or
    with `Stopped` once `stopping` is set."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping is not None and stopping.is_set():
            raise Stopped(service.name)
        if not service.running:
            raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
        if probe():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{service.name} not ready after {timeout}s:\n{service.log_tail()}")


def http_body(url: str) -> bytes | None:
    """The body of a 200 answer from `url`, or None."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bytes(response.read()) if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def http_ok(url: str) -> bool:
    return http_body(url) is not None


def redis_pong(port: int, password: str | None = None, host: str = LOOPBACK) -> bool:
    """True when the Redis on `port` answers PING (after AUTH when it has a password)."""
    auth = f"AUTH {password}\r\n".encode() if password else b""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(auth + b"PING\r\n")
            return b"+PONG" in _read_replies(sock, 2 if password else 1)
    except OSError:
        return False


def _read_replies(sock: socket.socket, lines: int) -> bytes:
    received = b""
    while received.count(b"\r\n") < lines and (chunk := sock.recv(256)):
        received += chunk
    return received


def redis_url(port: int, password: str | None, host: str = LOOPBACK) -> str:
    """The URL a node is given for the Redis on `port` (the password travels in it)."""
    return f"redis://{':' + password + '@' if password else ''}{host}:{port}/0"


def as_is(argv: list[str]) -> list[str]:
    return argv


def _redis_name(port: int, host: str) -> str:
    return f"redis-{port}" if host == LOOPBACK else f"redis-{host}-{port}"


def redis_config_path(run_dir: Path, port: int, host: str = LOOPBACK) -> Path:
    return run_dir / _redis_name(port, host) / "redis.conf"


def start_redis(run_dir: Path, port: int | None = None, password: str | None = None,
                children: Children | None = None, settings: Sequence[str] = (),
                host: str = LOOPBACK, wrap: Wrap = as_is) -> Service:
    """A throwaway redis-server on `host` (loopback), without persistence, with `password`
    if given (written to a config file only the launcher's user can read, never to argv)
    and any other config `settings` lines; `wrap` makes its command line (the fault tests
    run it inside a network namespace)."""
    children = children or Children()
    port = port or free_port()
    config = redis_config_path(run_dir, port, host)
    data_dir = config.parent
    data_dir.mkdir(parents=True, exist_ok=True)
    config.touch(mode=0o600)
    lines = [*([f"requirepass {password}"] if password else []), *settings]
    config.write_text("".join(f"{line}\n" for line in lines))
    argv = [find_binary("redis-server", "redis-server"), str(config), "--port", str(port),
            "--bind", host, "--save", "", "--appendonly", "no", "--dir", str(data_dir),
            "--daemonize", "no", "--protected-mode", "yes"]
    service = children.spawn("redis", wrap(argv), port,
                             run_dir / f"{_redis_name(port, host)}.log", host=host)
    wait_until(service, lambda: redis_pong(port, password, host), stopping=children.stopping)
    return service


def start_node(run_dir: Path, node_id: str, redis: str | None, args: list[str],
               port: int | None = None, unix_socket: Path | None = None,
               env: dict[str, str] | None = None, children: Children | None = None,
               host: str = LOOPBACK, wrap: Wrap = as_is) -> Service:
    """One `python -m node` process on `host` (loopback); returns once it answers /readyz.
    The Redis URL (which may carry a password) and `env` reach it through its environment,
    never its argv; `wrap` makes its command line."""
    children = children or Children()
    service = spawn_node(run_dir, node_id, redis, args, port, unix_socket, env, children, host,
                         wrap)
    wait_ready(service, children)
    return service


def spawn_node(run_dir: Path, node_id: str, redis: str | None, args: list[str],
               port: int | None, unix_socket: Path | None, env: dict[str, str] | None,
               children: Children, host: str = LOOPBACK, wrap: Wrap = as_is) -> Service:
    """`start_node` without the wait: several nodes start at once (`wait_ready` each)."""
    port = port or free_port()
    argv = [sys.executable, "-m", "node", "--host", host, "--port", str(port),
            "--node-id", node_id,
            *(["--unix-socket", str(unix_socket)] if unix_socket else []), *args]
    env = {**(env or {}), **({"CHAT_REDIS_URL": redis} if redis else {})}
    return children.spawn(node_id, wrap(argv), port, run_dir / f"{node_id}.log", env, host)


def wait_ready(service: Service, children: Children) -> None:
    """Return once the node answers /readyz (or raise as `wait_until` does)."""
    wait_until(service, lambda: http_ok(f"http://{service.host}:{service.port}/readyz"),
               stopping=children.stopping)


def start_nginx(run_dir: Path, config: GatewayConfig, port: int,
                children: Children | None = None, host: str = LOOPBACK,
                wrap: Wrap = as_is) -> Service:
    """nginx in the foreground with the rendered config (listening on `host`); returns once
    it answers its health check as this config's instance (not as an nginx left on the
    port); `wrap` makes its command line."""
    children = children or Children()
    config_path = run_dir / "nginx.conf"
    config_path.write_text(config.render())
    argv = [find_binary("nginx", "nginx-light"), "-p", str(run_dir), "-c", str(config_path),
            "-e", str(run_dir / "nginx-error.log")]
    service = children.spawn("nginx", wrap(argv), port, run_dir / "nginx.log", host=host)
    ours = f"ok {config.instance}\n".encode()
    wait_until(service, lambda: http_body(f"http://{host}:{port}/gateway-health") == ours,
               stopping=children.stopping)
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
