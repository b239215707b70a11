"""Fixtures that start real clusters: redis-server, node processes and nginx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cluster import Cluster
from tests.chat_client import ChatClient


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start clusters for one test; every process is stopped afterwards."""
    started: list[Cluster] = []

    def start(nodes: int = 3, **options: Any) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster{len(started)}", nodes, **options)
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def open_ws(http: aiohttp.ClientSession) -> AsyncIterator[Callable[..., Any]]:
    """Connect chat clients to any URL; closed after the test."""
    clients: list[ChatClient] = []

    async def connect(url: str) -> ChatClient:
        client = ChatClient(await http.ws_connect(url))
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()
