"""The diagnostic echo socket: off unless --echo, and then counted and limited like chat."""

from __future__ import annotations

import aiohttp
import pytest


async def test_the_echo_socket_is_off_by_default(node) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await node.ws_connect("/ws/echo")
    assert refused.value.status == 404


async def test_the_echo_socket_echoes_text_and_binary_exactly(make_node, connect) -> None:
    node = await make_node(echo=True)
    echo = await connect(node, path="/ws/echo")
    await echo.ws.send_str("héllo")
    assert (await echo.next_frame()).data == "héllo"
    await echo.ws.send_bytes(b"\x00\xff")
    assert (await echo.next_frame()).data == b"\x00\xff"
    status = await (await node.get("/api/status")).json()
    assert status["sockets"]["echo"] == 1 and status["connections"] == 0


async def test_the_echo_socket_has_the_chat_limits(make_node, connect) -> None:
    node = await make_node(echo=True, max_frame=100, frame_rate=0.001, frame_burst=3)
    echo = await connect(node, path="/ws/echo")
    await echo.ws.send_str("x" * 101)
    assert await echo.expect_close() == (1009, "Message too big")
    flood = await connect(node, path="/ws/echo")
    for _ in range(4):
        await flood.ws.send_str("x")
    assert [(await flood.next_frame()).data for _ in range(3)] == ["x"] * 3
    assert await flood.expect_close() == (1008, "Too many frames")


async def test_a_stopping_node_closes_echo_sockets_with_1001(make_node, connect) -> None:
    node = await make_node(echo=True)
    echo = await connect(node, path="/ws/echo")
    await node.server.app.shutdown()
    assert await echo.expect_close() == (1001, "Server shutting down")
