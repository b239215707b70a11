"""The HTTP routes beside the WebSocket."""

from __future__ import annotations

import os

import pytest

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
}


async def test_status_reports_node_and_connections(node, connect) -> None:
    await connect()
    await connect()
    response = await node.get("/api/status")
    assert response.status == 200
    assert await response.json() == {
        "status": "online", "node": "test-node", "pid": os.getpid(), "connections": 2,
        "draining": False, "broker": "ok",
    }


async def test_rooms_lists_names_and_user_counts(node, member) -> None:
    await member("alice", "general")
    await member("bob", "lobby")
    body = await (await node.get("/api/rooms")).json()
    assert body == {
        "rooms": ["general", "lobby", "random"],
        "details": [{"name": "general", "userCount": 1}, {"name": "lobby", "userCount": 1},
                    {"name": "random", "userCount": 0}],
    }


async def test_health_and_readiness(node) -> None:
    assert (await node.get("/healthz")).status == 200
    ready = await node.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ready"


@pytest.mark.parametrize("path", ["/api/rooms", "/api/status"])
async def test_cors_preflight_answers_204_with_the_headers(node, path: str) -> None:
    response = await node.options(path, headers={
        "Origin": "https://example.test", "Access-Control-Request-Method": "GET"})
    assert response.status == 204
    assert {k: response.headers[k] for k in CORS} == CORS


async def test_api_responses_carry_the_configured_origin(make_node) -> None:
    node = await make_node(cors_origin="https://chat.example.test")
    response = await node.get("/api/rooms")
    assert response.headers["Access-Control-Allow-Origin"] == "https://chat.example.test"


async def test_api_errors_carry_the_cors_headers_too(node) -> None:
    response = await node.get("/api/nothing-here")
    assert response.status == 404
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_non_api_routes_have_no_cors_headers(node) -> None:
    response = await node.get("/healthz")
    assert "Access-Control-Allow-Origin" not in response.headers
