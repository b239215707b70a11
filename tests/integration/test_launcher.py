"""`python -m gateway up`: whatever stops it, and whenever, no process it started outlives it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.cluster import STOP_TIMEOUT
from gateway.processes import LOOPBACK, free_port
from gateway.run_dir import RunDir

WATCH_EVERY = 0.01  # far shorter than any process here takes to start


def _children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found = []
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _started(pid: int) -> str | None:
    """The start time of a live process (with its pid, who it is), None once it is gone or
    a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if stat[0] == "Z" else stat[19]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Descendants(threading.Thread):
    """Records every process below `root` while it runs, so that one re-parented after its
    launcher died (an orphan) is still known to be ours: same pid, same start time."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.seen: dict[int, str] = {}  # pid → start time
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(WATCH_EVERY):
            pending = _children(self.root)
            while pending:
                pid = pending.pop()
                started = _started(pid)
                if started is not None:
                    self.seen.setdefault(pid, started)
                    pending += _children(pid)

    def alive(self) -> dict[int, str]:
        """pid → command line of every process seen that still runs."""
        return {pid: _cmdline(pid) for pid, started in list(self.seen.items())
                if _started(pid) == started}


def _eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Launcher:
    """One `python -m gateway up` of a test's own, on free ports, in a run dir of its own."""

    def __init__(self, run_dir: Path, port: int) -> None:
        self.port = port
        self.run_dir = run_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "up", "--nodes", "2", "--port", str(port),
             "--run-dir", str(run_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        self.descendants = Descendants(self.process.pid)
        self.descendants.start()

    def processes(self) -> dict[int, str]:
        """Every process it started that still runs."""
        return self.descendants.alive()

    def wait_up(self) -> str:
        """Block until the launcher has printed its banner; returns it."""
        assert self.process.stdout is not None
        banner = [self.process.stdout.readline()]
        assert banner[0].startswith("chat cluster up:"), banner[0] + self.stderr()
        while "Ctrl-C stops everything" not in banner[-1]:
            banner.append(self.process.stdout.readline())
            assert banner[-1], "".join(banner)
        return "".join(banner)

    def command(self, name: str) -> subprocess.CompletedProcess[str]:
        """`python -m gateway NAME` for this launcher's cluster."""
        return subprocess.run([sys.executable, "-m", "gateway", name, "--port", str(self.port),
                               "--run-dir", str(self.run_dir)],
                              capture_output=True, text=True, timeout=60)

    def node_pid(self, node_id: str) -> int | None:
        return next((pid for pid, cmd in self.processes().items()
                     if f"--node-id {node_id} " in cmd), None)

    def stderr(self) -> str:
        self.process.wait(30)
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def assert_nothing_left(self) -> None:
        self.process.wait(30)
        _eventually(lambda: not self.processes(), 10, f"no process left: {self.processes()}")
        assert not (self.run_dir / "cluster.json").exists(), "a stopped cluster left its state"

    def end(self) -> None:
        """Test clean-up: whatever happened, nothing of ours keeps running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.processes():
            os.kill(pid, signal.SIGKILL)
        self.descendants.done.set()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Callable[[], Launcher]]:
    started: list[Launcher] = []

    def start(run_dir: Path | None = None, port: int | None = None) -> Launcher:
        started.append(Launcher(run_dir or tmp_path / f"run{len(started)}",
                                port or free_port()))
        return started[-1]

    yield start
    for one in started:
        one.end()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_stops_every_process_and_exits_0(launcher, signum: int) -> None:
    cluster = launcher()
    banner = cluster.wait_up()
    where = f"--port {cluster.port} --run-dir {cluster.run_dir}"
    assert f"gateway status {where}`" in banner and f"rolling-restart {where}`" in banner
    names = " ".join(cluster.processes().values())
    assert "redis-server" in names and "nginx: master" in names and "--node-id node2" in names
    shown = cluster.command("status")
    assert shown.returncode == 0 and shown.stdout.count(" ready ") == 2, shown
    cluster.process.send_signal(signum)
    cluster.assert_nothing_left()
    assert cluster.process.returncode == 0
    for command in ("status", "rolling-restart"):
        after = cluster.command(command)
        assert after.returncode == 1 and "no cluster running" in after.stderr, after


def test_a_stop_during_start_up_leaves_nothing(launcher) -> None:
    cluster = launcher()
    _eventually(lambda: cluster.node_pid("node1") is not None, 20, "node1 to be spawned")
    cluster.process.send_signal(signal.SIGINT)  # node1 is starting, node2 not yet spawned
    cluster.assert_nothing_left()
    assert cluster.process.returncode != 0
    assert "stopped before the cluster was up" in cluster.stderr()


def test_a_stop_while_a_node_is_being_restarted_leaves_nothing(launcher) -> None:
    cluster = launcher()
    cluster.wait_up()
    old = cluster.node_pid("node1")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    _eventually(lambda: cluster.node_pid("node1") not in (None, old), 10,
                "the supervisor to spawn a new node1")
    cluster.process.send_signal(signal.SIGINT)  # before the new node1 is ready
    cluster.assert_nothing_left()


def test_a_launcher_killed_outright_takes_its_processes_with_it(launcher) -> None:
    cluster = launcher()
    cluster.wait_up()
    cluster.process.kill()
    cluster.process.wait()
    _eventually(lambda: not cluster.processes(), 20,
                f"no process left after SIGKILL: {cluster.processes()}")
    stale = cluster.command("rolling-restart")
    assert stale.returncode == 1 and "killed" in stale.stderr, stale


def test_a_taken_gateway_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        cluster = Launcher(tmp_path / "run", taken.getsockname()[1])
        try:
            assert cluster.process.wait(30) != 0
            assert f"is in use (Address already in use) by pid {os.getpid()}" in cluster.stderr()
            assert not cluster.processes()
        finally:
            cluster.end()


def test_the_run_directory_and_its_secrets_are_the_owners_alone(launcher) -> None:
    cluster = launcher()
    cluster.wait_up()
    assert cluster.run_dir.stat().st_mode & 0o777 == 0o700
    secrets = [cluster.run_dir / "cluster.json", *cluster.run_dir.glob("redis-*/redis.conf")]
    assert len(secrets) == 2
    for path in secrets:
        assert path.stat().st_mode & 0o777 == 0o600, path
    for pid, cmdline in cluster.processes().items():
        assert "token" not in cmdline.lower() and "redis://" not in cmdline, cmdline
    public = RunDir(cluster.run_dir).public  # where nginx's workers reach the nodes
    assert public.stat().st_mode & 0o777 == 0o711  # no other user may list it ...
    sockets = [path.name for path in public.glob("node*.sock")]
    assert len(sockets) == 2 and all(len(name) > 40 for name in sockets), sockets  # ... or guess
    cluster.process.send_signal(signal.SIGINT)
    cluster.assert_nothing_left()


def test_a_second_start_is_refused_and_leaves_the_running_cluster_alone(launcher) -> None:
    cluster = launcher()
    cluster.wait_up()
    same_dir = launcher(cluster.run_dir, free_port())
    same_port = launcher(port=cluster.port)
    for refused in (same_dir, same_port):
        assert refused.process.wait(30) != 0
    assert (f"a cluster is already running from {cluster.run_dir} (launcher pid "
            f"{cluster.process.pid})") in same_dir.stderr()
    assert f"port {cluster.port} on {LOOPBACK} is in use" in same_port.stderr()
    assert not same_dir.processes() and not same_port.processes()
    shown = cluster.command("status")
    assert shown.returncode == 0 and shown.stdout.count(" ready ") == 2, shown
    cluster.process.send_signal(signal.SIGINT)
    cluster.assert_nothing_left()


def test_a_start_clears_what_the_previous_run_left(launcher) -> None:
    first = launcher()
    first.wait_up()
    left = {path.name for path in first.run_dir.iterdir()}
    first.process.kill()  # as a killed launcher would, it leaves its files
    first.process.wait()
    _eventually(lambda: not first.processes(), 20, "the first run's processes to go")
    second = launcher(first.run_dir)
    second.wait_up()
    now = {path.name for path in first.run_dir.iterdir()}
    stale = {name for name in left - now if name.startswith("redis-")}
    assert stale and not {n for n in now if n.startswith("redis-")} & stale, (left, now)
    assert len(now) <= len(left)
    second.process.send_signal(signal.SIGINT)
    second.assert_nothing_left()
    assert not RunDir(first.run_dir).public.exists()


def test_a_process_that_will_not_stop_is_killed_in_bounded_time(launcher) -> None:
    cluster = launcher()
    cluster.wait_up()
    nginx = next(pid for pid, cmd in cluster.processes().items() if "nginx: master" in cmd)
    os.kill(nginx, signal.SIGSTOP)  # it can no longer act on the launcher's SIGQUIT
    started = time.monotonic()
    cluster.process.send_signal(signal.SIGINT)
    cluster.assert_nothing_left()  # its workers too, though their master was killed
    assert time.monotonic() - started < STOP_TIMEOUT + 15
    assert f"nginx (pid {nginx}) did not stop in time; killing it" in cluster.stderr()
