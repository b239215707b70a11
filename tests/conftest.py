"""Fixtures shared by every test: nodes served in-process and chat clients connected to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestClient

from node.app import create_app
from node.config import Settings
from tests.chat_client import ChatClient

NodeFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
ClientFactory = Callable[..., Awaitable[ChatClient]]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Tests run on uvloop, like `python -m node`."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings every node of a test starts with; tests override single fields."""
    return {"node_id": "test-node", "rate": 1000.0, "burst": 1000}


@pytest.fixture
async def make_node(aiohttp_client: Any, settings_overrides: dict[str, Any]) -> NodeFactory:
    """Start a real node on a free loopback port and return an HTTP client for it."""

    async def start(**overrides: Any) -> TestClient[web.Request, web.Application]:
        settings = Settings(**{**settings_overrides, **overrides})
        return await aiohttp_client(create_app(settings))

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
