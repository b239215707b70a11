"""Fixtures shared by every test: nodes served in-process and chat clients connected to them."""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.processes import Children, Service, redis_url as redis_url_of, start_redis
from gateway.redis_cluster import RedisCluster, start_redis_cluster
from gateway.tokens import new_secret
from node.app import create_app, make_runner
from node.backends.redis.support import Client
from node.backends.redis.support import connect as connect_redis
from node.config import Settings
from tests.chat_client import ChatClient

pytest_plugins = ["tests.integration.cluster_fixtures"]

# Rates high enough that only the tests of a limit meet it; those set it themselves.
UNLIMITED: dict[str, Any] = {
    "rate": 1000.0, "burst": 1000, "frame_rate": 10000.0, "frame_burst": 10000,
    "user_rate": 10000.0, "user_burst": 10000, "address_rate": 10000.0, "address_burst": 10000,
    "join_rate": 10000.0, "join_burst": 10000, "address_rooms_per_hour": 100_000,
    "address_identities_per_minute": 100_000,
}
REDIS_PASSWORD = new_secret()  # every Redis of the tests has one, as the launcher's has


def unlimited_flags() -> list[str]:
    """UNLIMITED as `python -m node` flags, for tests that start node processes."""
    return [arg for name, value in UNLIMITED.items()
            for arg in (f"--{name.replace('_', '-')}", str(value))]


NodeFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
ClientFactory = Callable[..., Awaitable[ChatClient]]


class NodeTestServer(TestServer):
    """Serves the app as `python -m node` does: chat WebSockets through the node's runner."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return make_runner(self.app, **kwargs)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Tests run on uvloop, like `python -m node`."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One real redis-server for the session, with a password as the launcher's has; tests
    keep apart by key prefix."""
    service = start_redis(Path(tmp_path_factory.mktemp("redis")), password=REDIS_PASSWORD)
    yield service
    service.stop()


@pytest.fixture
def redis_url(redis_server: Service) -> str:
    return redis_url_of(redis_server.port, REDIS_PASSWORD)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One real Redis Cluster for the session (3 primaries, a replica each), as `gateway up
    --redis-cluster` starts it. Tests that kill its nodes start their own."""
    children = Children()
    try:
        yield start_redis_cluster(Path(tmp_path_factory.mktemp("redis-cluster")), 3,
                                  REDIS_PASSWORD, children)
    finally:
        for service in children.stop():
            service.stop()


# The backends a test runs on, Redis Cluster marked slow (it starts 6 redis-servers).
REDIS_BACKENDS = ["redis", pytest.param("redis-cluster", marks=pytest.mark.slow)]
# One Redis, or a Redis Cluster of 3 shards: `Cluster(redis_shards=...)`.
REDIS_SHARDS = [pytest.param(0, id="redis"),
                pytest.param(3, id="redis-cluster", marks=pytest.mark.slow)]



async def just_before_a_whole_second() -> float:
    """Wait for the moment a window aligned to whole seconds of the clock is about to end
    (0.85 s into a second); returns that whole second (the window's edge)."""
    await asyncio.sleep((0.85 - time.time() % 1.0) % 1.0)
    return float(math.ceil(time.time()))


async def just_after(edge: float) -> None:
    """Wait until 0.1 s past `edge` (at once when that is past already: a slow step before
    must not push the wait into the next window)."""
    await asyncio.sleep(max(0.0, edge + 0.1 - time.time()))


def redis_endpoint(request: pytest.FixtureRequest, kind: str) -> tuple[str, bool]:
    """The URL of the Redis a test parameter names ("redis" or "redis-cluster"), and whether
    it is a cluster."""
    if kind == "redis-cluster":
        return request.getfixturevalue("redis_cluster").seed_url, True
    return request.getfixturevalue("redis_url"), False


@pytest.fixture
async def redis_client() -> AsyncIterator[Callable[[str, bool], Client]]:
    """Makes a client as a node does (one per node, shared by its backends); every one is
    closed after the test."""
    clients: list[Client] = []

    def make(url: str, cluster: bool = False) -> Client:
        clients.append(connect_redis(url, cluster))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def redis_prefix() -> str:
    """A key and channel prefix of this test's own."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Node tests run against the embedded mode and against a real Redis."""
    return str(request.param)


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest, backend: str, redis_prefix: str
                       ) -> dict[str, Any]:
    """Settings every node of a test starts with; tests override single fields."""
    overrides: dict[str, Any] = {"node_id": "test-node", **UNLIMITED}
    if backend == "redis":
        overrides |= {"redis_url": request.getfixturevalue("redis_url"),
                      "redis_prefix": redis_prefix}
    return overrides


@pytest.fixture
async def make_node(aiohttp_client: Any, settings_overrides: dict[str, Any]) -> NodeFactory:
    """Start a real node on a free loopback port and return an HTTP client for it."""

    async def start(**overrides: Any) -> TestClient[web.Request, web.Application]:
        settings = Settings(**{**settings_overrides, **overrides})
        return await aiohttp_client(NodeTestServer(create_app(settings)))

    return start


@pytest.fixture
async def node(make_node: NodeFactory) -> TestClient[web.Request, web.Application]:
    return await make_node()


@pytest.fixture
async def connect(
    node: TestClient[web.Request, web.Application],
) -> AsyncIterator[ClientFactory]:
    """Open chat clients to the default node; all are closed after the test."""
    clients: list[ChatClient] = []

    async def open_client(http: TestClient[web.Request, web.Application] = node,
                          path: str = "/ws", **options: Any) -> ChatClient:
        client = ChatClient(await http.ws_connect(path, **options))
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


@pytest.fixture
async def member(connect: ClientFactory) -> Callable[..., Awaitable[ChatClient]]:
    """An authenticated client already in a room."""

    async def join(name: str, room: str = "general", **connect_args: Any) -> ChatClient:
        client = await connect(**connect_args)
        await client.auth(name)
        await client.join(room)
        return client

    return join


# No litter: what the suite leaves in the temporary directory under the names this code gives
# its temporary folders fails the run (tests/unit/test_temporary_names.py keeps every such
# name on this list; other processes of the machine may use the directory meanwhile).
OUR_TEMPORARY_NAMES = ("admission-", "autobahn-", "chat-", "chromium-profile-", "fanout-",
                       "firefox-profile-", "hostile-", "redis-memory-", "storm-",
                       "webhook-rate-")
_TMP = Path(tempfile.gettempdir())
_BEFORE = pytest.StashKey[set[str]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = set(os.listdir(_TMP))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    left = sorted(name for name in set(os.listdir(_TMP)) - before
                  if name.startswith(OUR_TEMPORARY_NAMES))
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"the suite left in {_TMP}: {', '.join(left)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
