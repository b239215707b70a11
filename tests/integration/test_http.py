"""The HTTP routes beside the WebSocket."""

from __future__ import annotations

import asyncio
import re

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
    status = await response.json()
    assert len(status.pop("instance")) == 12
    assert status == {
        "status": "online", "node": "test-node", "connections": 2,
        "sockets": {"total": 3, "pending": 0, "http": 1, "chat": 2, "echo": 0},
        "draining": False, "broker": "ok",
    }
    assert response.headers["Server"] == "chat", "no versions in the Server header"


async def test_rooms_lists_names_and_user_counts(node, member) -> None:
    await member("alice", "general")
    await member("bob", "lobby")
    body = await (await node.get("/api/rooms")).json()
    assert body == {
        "rooms": ["general", "lobby", "random"],
        "details": [{"name": "general", "userCount": 1}, {"name": "lobby", "userCount": 1},
                    {"name": "random", "userCount": 0}],
        "total": 3, "next": None,
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


UPGRADE = ("GET /ws HTTP/1.1\r\nHost: node\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n"
           "\r\n")


async def raw_exchange(node, *requests: str) -> list[bytes]:
    """Send each request on one TCP connection; the response heads, in order."""
    reader, writer = await asyncio.open_connection(node.host, node.port)
    heads = []
    try:
        for request in requests:
            writer.write(request.encode())
            heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
            length = re.search(rb"Content-Length: (\d+)", heads[-1], re.IGNORECASE)
            await reader.readexactly(int(length.group(1)) if length else 0)
    finally:
        writer.close()
    return heads


async def test_the_chat_handshake_switches_protocols_with_the_accept_key(node) -> None:
    [head] = await raw_exchange(node, UPGRADE.format(version=13))
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head


async def test_a_handshake_of_another_websocket_version_is_a_400(node) -> None:
    [head] = await raw_exchange(node, UPGRADE.format(version=8))
    assert head.startswith(b"HTTP/1.1 400 ")


async def test_a_chat_upgrade_on_a_reused_connection_is_refused_with_503(node) -> None:
    first, second = await raw_exchange(
        node, "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n", UPGRADE.format(version=13))
    assert first.startswith(b"HTTP/1.1 200 ")
    assert second.startswith(b"HTTP/1.1 503 ")


async def test_a_plain_get_of_the_chat_path_is_a_400(node) -> None:
    [head] = await raw_exchange(node, "GET /ws HTTP/1.1\r\nHost: node\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")


async def test_a_connection_that_sends_no_request_head_in_time_is_closed(make_node) -> None:
    node = await make_node(handshake_timeout=0.3)
    reader, writer = await asyncio.open_connection(node.host, node.port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: node\r\n")  # and never the end of the head
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()


async def test_a_head_completed_within_the_timeout_is_served(make_node) -> None:
    node = await make_node(handshake_timeout=0.3)
    reader, writer = await asyncio.open_connection(node.host, node.port)
    writer.write(UPGRADE.format(version=13)[:30].encode())
    await asyncio.sleep(0.1)  # a slow client, inside the limit
    writer.write(UPGRADE.format(version=13)[30:].encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 101 ")
    writer.close()


async def test_the_chat_page_and_its_assets_are_served_with_a_strict_policy(node) -> None:
    page = await node.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert '<script type="module" src="/static/chat.js">' in await page.text()
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for asset, kind in (("chat.js", "javascript"), ("chat.css", "text/css")):
        response = await node.get(f"/static/{asset}")
        assert response.status == 200 and kind in response.content_type
    assert (await node.get("/static/../config.py")).status in (403, 404)
