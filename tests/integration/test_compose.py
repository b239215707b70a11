"""compose/ for real: the images built from compose/Dockerfile on a base made from Debian
packages, `docker-compose up --scale node=3`, clients through the gateway, `docker stop`
draining, scaling, a rolling update and Redis's AOF volume.

The test starts its own Docker daemon (Debian's docker.io; no service manager here) and stops
it by PID. No image registry is reachable from this machine type, so the base image comes
from compose/debian-base.sh (debootstrap, cached) and is passed as the BASE_IMAGE build
argument. Where any of that cannot run, the module is skipped with the reason."""

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
from tests.zero_loss_load import Load

ROOT = Path(__file__).parents[2]
COMPOSE_DIR = ROOT / "compose"
DOCKER = "/usr/bin/docker"  # Debian's client: a newer one earlier on PATH may lack buildx
DOCKERD = "/usr/sbin/dockerd"
COMPOSE = "/usr/bin/docker-compose"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chat-compose"
BASE_IMAGE = "chat-debian-base:bookworm"
NODE_IMAGE = "chat-node:test"
GATEWAY_IMAGE = "chat-gateway:test"
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
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


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
                tail = (run_dir / "dockerd.log").read_text(errors="replace")[-1500:]
                pytest.skip(f"the Docker daemon does not run on this machine:\n{tail}")
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
    """The base from Debian packages, then the node and gateway images built on it. Package
    access inside the build (this machine's CA bundle) goes in as build secrets."""
    base = subprocess.run(["bash", str(COMPOSE_DIR / "debian-base.sh"), BASE_IMAGE],
                          env=docker_env, capture_output=True, text=True, timeout=600)
    if base.returncode != 0:
        pytest.skip(f"no base image from Debian packages on this machine:\n{base.stderr[-1500:]}")
    secrets = Path(tempfile.mkdtemp(prefix="chat-build-secrets-"))
    try:
        (secrets / "pip.conf").write_text("[global]\ncert = /run/secrets/ca.crt\n")
        shutil.copy(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
                    secrets / "ca.crt")
        for target, tag in (("node", NODE_IMAGE), ("gateway", GATEWAY_IMAGE)):
            _run([DOCKER, "build", "-q", "-f", str(COMPOSE_DIR / "Dockerfile"),
                  "--target", target, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                  "--secret", f"id=pip.conf,src={secrets / 'pip.conf'}",
                  "--secret", f"id=ca.crt,src={secrets / 'ca.crt'}", "-t", tag, str(ROOT)],
                 docker_env, timeout=600)
    finally:
        shutil.rmtree(secrets)
    return {"CHAT_NODE_IMAGE": NODE_IMAGE, "CHAT_GATEWAY_IMAGE": GATEWAY_IMAGE,
            "CHAT_REDIS_IMAGE": BASE_IMAGE, "CHAT_PROMETHEUS_IMAGE": BASE_IMAGE}


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
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    env = {**docker_env, **images, "CHAT_GATEWAY_PORT": str(free_port()),
           "CHAT_PROMETHEUS_PORT": str(free_port()),
           "CHAT_DRAIN_WINDOW": str(DRAIN_WINDOW), "CHAT_NOFILE": str(min(65536, hard_limit))}
    deployment = Deployment(env, f"chattest{os.getpid()}", int(env["CHAT_GATEWAY_PORT"]))
    try:
        deployment.compose("up", "-d", "--no-build", "--scale", "node=3")
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


def test_a_replica_added_by_scaling_gets_clients(deployment: Deployment) -> None:
    before = set(deployment.nodes())
    deployment.compose("up", "-d", "--no-build", "--no-recreate", "--scale", "node=4")
    added = [c for c in deployment.nodes() if c not in before]
    assert len(added) == 4 - len(before)
    deployment.wait_healthy(added)
    deployment.wait_nodes_behind_gateway(added)  # the gateway reloaded for it


async def test_a_rolling_update_loses_nothing(deployment: Deployment) -> None:
    old = set(deployment.nodes())
    env = {**deployment.env, "COMPOSE": COMPOSE}
    update = ["bash", str(COMPOSE_DIR / "rolling-update.sh"), "-p", deployment.project]
    load = Load(deployment)
    await load.start()
    try:
        await asyncio.sleep(1.0)
        load.presence_changes.clear()  # the initial joins
        out = await asyncio.to_thread(_run, update, env, 600)
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
