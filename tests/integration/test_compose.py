"""compose/ for real: compose/README.md's commands run as written (tests/docs_blocks.py picks
the blocks marked for this module): the base image from Debian packages, the images built with
the host's CA bundle as a build secret, `docker-compose up --scale node=3`, clients through the
gateway, `docker stop` draining, scaling up and down, a rolling update, Redis's AOF volume,
the logs, and `down` draining the nodes before the gateway goes.

The test starts its own Docker daemon (Debian's docker.io; no service manager here) and stops
it by PID; its commands reach it through DOCKER_HOST, and COMPOSE_PROJECT_NAME keeps its
project apart. No image registry is reachable from this machine type: the README's
registry-free build is the one run. Where any of that cannot run, the module is skipped with
the reason in one line."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.processes import LOOPBACK, die_with_parent, free_port, http_body
from node.client import ChatClient
from tests.docs_blocks import Block, blocks_run_by
from tests.zero_loss_load import Load

ROOT = Path(__file__).parents[2]
COMPOSE_DIR = ROOT / "compose"
DOCKER = "/usr/bin/docker"  # Debian's client: a newer one earlier on PATH may lack buildx
DOCKERD = "/usr/sbin/dockerd"
COMPOSE = "/usr/bin/docker-compose"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chat-compose"
BASE_IMAGE = "chat-debian-base:bookworm"
DRAIN_WINDOW = 2

pytestmark = [pytest.mark.slow,
              pytest.mark.timeout(900)]  # a cold run debootstraps and compiles PyICU


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the Docker daemon and debootstrap need root"
    for path, package in ((DOCKERD, "docker.io"), (DOCKER, "docker.io"),
                          (COMPOSE, "docker-compose"), ("/usr/sbin/debootstrap", "debootstrap")):
        if not Path(path).exists():
            return f"{path} is missing (apt-get install {package}; tests/run.sh does as root)"
    return None


if (reason := _why_not()) is not None:
    pytest.skip(reason, allow_module_level=True)


def _run(argv: list[str], env: dict[str, str], timeout: float = 180) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _readme_block(holding: str) -> Block:
    """The block of compose/README.md, marked for this module, that holds `holding`."""
    found = [block for block in blocks_run_by("tests/integration/test_compose.py")
             if holding in block.text]
    assert len(found) == 1, f"{holding!r} in {len(found)} blocks"
    return found[0]


def run_block(holding: str, env: dict[str, str], timeout: float = 600) -> str:
    """That block as typed into bash at the repository's root (it starts with `cd compose`)."""
    return _run(["bash", "-euo", "pipefail", "-c", _readme_block(holding).text], env, timeout)


def _last_line(log: Path) -> str:
    """The last line of a log that says why (a Go daemon ends in stack traces)."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if "level=error" in line or "level=fatal" in line or "failed" in line]
    return lines[-1].strip() if lines else "(nothing in its log)"


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """A Docker daemon of our own (images cached between runs), stopped by PID after."""
    run_dir = Path(tempfile.mkdtemp(prefix="chat-dockerd-"))
    socket_path = run_dir / "docker.sock"
    env = {**os.environ, "DOCKER_HOST": f"unix://{socket_path}", "DOCKER": DOCKER,
           "DOCKER_BUILDKIT": "1"}
    log = (run_dir / "dockerd.log").open("wb")
    daemon = subprocess.Popen(
        [DOCKERD, "--data-root", str(CACHE / "docker"), "--exec-root", str(run_dir / "exec"),
         "--pidfile", str(run_dir / "dockerd.pid"), "--host", f"unix://{socket_path}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([DOCKER, "info"], env=env, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.skip("the Docker daemon does not run on this machine: "
                            + _last_line(run_dir / "dockerd.log"))
            time.sleep(0.2)
        yield env
    finally:
        daemon.terminate()
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def images(docker_env: dict[str, str]) -> dict[str, str]:
    """The README's registry-free build: the base from Debian packages, both images on it."""
    env = {**docker_env, "PATH": f"/usr/bin:{os.environ['PATH']}"}  # Debian's docker first
    run_block("./debian-base.sh", env, timeout=900)
    # What the block exports stays set in the shell where the other commands are typed.
    return {"PATH": env["PATH"], "CHAT_BASE_IMAGE": BASE_IMAGE, "CHAT_REDIS_IMAGE": BASE_IMAGE,
            "CHAT_PROMETHEUS_IMAGE": BASE_IMAGE}


@dataclass
class Deployment:
    """One compose project of compose/docker-compose.yml."""

    env: dict[str, str]
    project: str
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def compose(self, *args: str, timeout: float = 180) -> str:
        return _run([COMPOSE, "-p", self.project, "-f", str(COMPOSE_DIR / "docker-compose.yml"),
                     *args], self.env, timeout)

    def docker(self, *args: str, timeout: float = 120) -> str:
        return _run([DOCKER, *args], self.env, timeout)

    def nodes(self) -> list[str]:
        return self.compose("ps", "-q", "node").split()

    def wait_healthy(self, containers: list[str], within: float = 120) -> None:
        deadline = time.monotonic() + within
        while True:
            health = self.docker("inspect", "-f", "{{.State.Health.Status}}", *containers)
            if set(health.split()) == {"healthy"}:
                return
            assert time.monotonic() < deadline, f"not healthy after {within}s: {health}"
            time.sleep(0.5)

    def status(self) -> dict[str, object]:
        body = http_body(f"{self.http_url}/api/status")
        assert body is not None, "the gateway did not answer /api/status"
        return dict(json.loads(body))

    def wait_nodes_behind_gateway(self, containers: list[str], within: float = 60) -> None:
        """Until /api/status through the gateway has answered from each of `containers`
        (a node's id starts with its container's hostname, the short container id)."""
        wanted = {container[:12] for container in containers}
        seen: set[str] = set()
        deadline = time.monotonic() + within
        while not wanted <= seen:
            assert time.monotonic() < deadline, f"only {seen} of {wanted} answered"
            seen.add(str(self.status()["node"]).rsplit("-", 1)[0])


@pytest.fixture(scope="module")
def deployment(docker_env: dict[str, str], images: dict[str, str]) -> Iterator[Deployment]:
    project = f"chattest{os.getpid()}"
    env = {**docker_env, **images, "COMPOSE_PROJECT_NAME": project,
           "CHAT_GATEWAY_PORT": str(free_port()), "CHAT_PROMETHEUS_PORT": str(free_port()),
           "CHAT_DRAIN_WINDOW": str(DRAIN_WINDOW)}
    deployment = Deployment(env, project, int(env["CHAT_GATEWAY_PORT"]))
    try:
        run_block("docker-compose up -d --scale node=3", env)
        deployment.wait_healthy(deployment.nodes())
        yield deployment
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")
        subprocess.run([DOCKER, "image", "prune", "--force"], env=env, capture_output=True,
                       timeout=120)


def test_three_healthy_replicas_answer_through_the_gateway(deployment: Deployment) -> None:
    nodes = deployment.nodes()
    assert len(nodes) == 3
    deployment.wait_nodes_behind_gateway(nodes)
    assert deployment.docker("exec", nodes[0], "id", "-u").strip() == "10001"  # not root
    policy = deployment.compose("exec", "-T", "redis", "redis-cli", "config", "get",
                                "maxmemory-policy")
    assert policy.split() == ["maxmemory-policy", "noeviction"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{deployment.http_url}/metrics", timeout=5)
    refused.value.close()
    assert refused.value.code == 404  # metrics stay inside the cluster network
    scraped = deployment.docker("exec", nodes[0], "python3", "-c",
                                "import urllib.request; print(urllib.request.urlopen("
                                "'http://127.0.0.1:8000/metrics').read().decode())")
    assert "chat_sessions " in scraped


def test_prometheus_of_the_monitoring_profile_scrapes_every_replica(
        deployment: Deployment) -> None:
    """Grafana has no Debian package, so only its provisioning files are checked
    (test_metrics: the dashboard queries what a node serves); Prometheus runs for real."""
    deployment.compose("--profile", "monitoring", "up", "-d", "--no-build", "--no-recreate",
                       "prometheus")
    replicas = str(len(deployment.nodes()))
    deadline = time.monotonic() + 90
    while (_prometheus(deployment, 'count(up{job="chat-node"} == 1)') != replicas
           or _prometheus(deployment, "sum(chat_broker_ready)") != replicas):
        assert time.monotonic() < deadline, "Prometheus never scraped every replica"
        time.sleep(1)


def _prometheus(deployment: Deployment, query: str) -> str | None:
    """The value of an instant query's first result, or None."""
    url = (f"http://{LOOPBACK}:{deployment.env['CHAT_PROMETHEUS_PORT']}/api/v1/query?"
           + urllib.parse.urlencode({"query": query}))
    body = http_body(url)
    results = json.loads(body)["data"]["result"] if body else []
    return str(results[0]["value"][1]) if results else None


async def test_docker_stop_drains_a_nodes_clients_to_the_others(deployment: Deployment) -> None:
    clients = [ChatClient(deployment.ws_url, f"drained{i}", "general") for i in range(6)]
    await asyncio.gather(*(client.start(timeout=20) for client in clients))
    try:
        container = next(c for c in deployment.nodes()
                         if any(str(client.node).startswith(c[:12]) for client in clients))
        on_it = [client for client in clients if str(client.node).startswith(container[:12])]
        started = time.monotonic()
        await asyncio.to_thread(deployment.docker, "stop", container)
        stopped_in = time.monotonic() - started
        exit_code = deployment.docker("inspect", "-f", "{{.State.ExitCode}}", container)
        assert exit_code.strip() == "0", "the node exited by itself, not killed at the grace end"
        assert stopped_in < 25, "it drained within the drain window, well before the grace end"
        for client in on_it:
            shutdown = await _next_of(client, "server_shutdown")
            assert shutdown["retryAfterMs"] >= 0
        seq = await clients[-1].send("after the drain")
        for client in clients:
            message = await _next_of(client, "message")
            assert (message["seq"], message["text"]) == (seq, "after the drain")
        assert all(client.connections == 2 for client in on_it)
        assert not any(str(client.node).startswith(container[:12]) for client in clients)
    finally:
        await asyncio.gather(*(client.close() for client in clients))
        deployment.docker("rm", container)


async def _next_of(client: ChatClient, kind: str) -> dict[str, object]:
    while (event := await client.next_event(timeout=30))["type"] != kind:
        pass
    return event


async def test_scaling_up_adds_replicas_with_clients_and_down_drains_the_newest(
        deployment: Deployment) -> None:
    before = set(deployment.nodes())
    run_block("--no-recreate --scale node=5", deployment.env)
    added = [c for c in deployment.nodes() if c not in before]
    assert len(added) == 5 - len(before)
    deployment.wait_healthy(added)
    deployment.wait_nodes_behind_gateway(added)  # the gateway reloaded for them
    clients = [ChatClient(deployment.ws_url, f"scaled{i}", "scaling") for i in range(10)]
    await asyncio.gather(*(client.start(timeout=20) for client in clients))
    try:
        on_replica = {client: str(client.node)[:12] for client in clients}
        await asyncio.to_thread(run_block, "--no-recreate --scale node=3", deployment.env)
        kept = {container[:12] for container in deployment.nodes()}
        assert len(kept) == 3
        moved = [client for client, replica in on_replica.items() if replica not in kept]
        assert moved, "least_conn put some of the clients on the newest replicas"
        for client in moved:  # drained, not cut: told before their replica went
            assert (await _next_of(client, "server_shutdown"))["retryAfterMs"] >= 0
        seq = await clients[0].send("after scaling down")
        for client in clients:
            assert (await _next_of(client, "message"))["seq"] == seq
        now_on = {str(client.node)[:12] for client in clients}
        assert now_on <= kept, (now_on, kept)
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_a_rolling_update_loses_nothing(deployment: Deployment) -> None:
    old = set(deployment.nodes())
    load = Load(deployment)
    await load.start()
    try:
        await asyncio.sleep(1.0)
        load.presence_changes.clear()  # the initial joins
        out = await asyncio.to_thread(run_block, "./rolling-update.sh", deployment.env)
        assert f"rolling update complete: {len(old)} nodes replaced" in out
        await asyncio.sleep(1.0)
        await load.finish()
        load.assert_exactly_once_in_order()
        assert all(client.connections >= 2 for client in load.everyone), "all were replaced"
        assert load.presence_changes == [], "moving users neither left nor joined"
    finally:
        await load.close()
    assert not old & set(deployment.nodes()) and len(deployment.nodes()) == len(old)


async def test_redis_keeps_history_on_its_volume_across_a_restart(
        deployment: Deployment) -> None:
    async with ChatClient(deployment.ws_url, "before", "persisted") as client:
        seq = await client.send("kept in the AOF")
        epoch = client.epoch
    deployment.compose("restart", "redis")
    deployment.wait_healthy(deployment.compose("ps", "-q", "redis").split())
    async with ChatClient(deployment.ws_url, "after", "persisted") as client:
        joined = await _next_of(client, "room_joined")
    assert joined["epoch"] == epoch
    assert [(m["seq"], m["text"]) for m in joined["history"]] == [(seq, "kept in the AOF")]


def test_the_logs_show_each_service(deployment: Deployment) -> None:
    logs = run_block("docker-compose logs --tail 20 node", deployment.env)
    assert "node.access: GET /readyz 200" in logs and "gateway_1 " in logs, logs[-2000:]


async def test_down_drains_the_nodes_while_the_gateway_carries_their_clients(
        deployment: Deployment, open_ws) -> None:
    """Last in this module: it stops the deployment."""
    clients = []
    for index in range(6):
        client = await open_ws(deployment.ws_url)
        await client.auth(f"down{index}")
        clients.append(client)
    await asyncio.to_thread(run_block, "docker-compose down", deployment.env)
    for client in clients:
        await client.skip_to("server_shutdown")
        assert (await client.expect_close())[0] == 1001
