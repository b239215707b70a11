"""Heartbeats and shutdown: how connections end when the client or the server goes away."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

import aiohttp
import pytest

from tests.conftest import ClientFactory
from gateway.processes import free_port


async def test_server_pings_and_a_client_that_answers_stays(make_node, connect) -> None:
    node = await make_node(ping_interval=0.1, ping_timeout=0.35)
    client = await connect(node)
    for _ in range(5):  # 0.5 s: past the timeout, kept alive by the pongs
        message = await client.next_frame()
        ping = json.loads(message.data)
        assert ping["type"] == "ping" and isinstance(ping["timestamp"], int)
        await client.send(type="pong", timestamp=ping["timestamp"])
    await client.send(type="list_rooms")
    assert (await client.expect("room_list"))["rooms"]


async def test_pings_spread_over_the_interval_reach_every_client_once_each(make_node, connect
                                                                          ) -> None:
    node = await make_node(ping_interval=0.6, ping_timeout=1.3)  # six slices of 0.1 s
    clients = [await connect(node) for _ in range(12)]

    async def answer_pings(client) -> list[float]:
        """When each of three pings came; answered, so that the client stays."""
        arrivals = []
        for _ in range(3):
            ping = json.loads((await client.next_frame(timeout=2)).data)
            assert ping["type"] == "ping"
            arrivals.append(asyncio.get_running_loop().time())
            await client.send(type="pong", timestamp=ping["timestamp"])
        return arrivals

    arrivals = await asyncio.gather(*(answer_pings(client) for client in clients))
    gaps = [later - earlier for times in arrivals for earlier, later in zip(times, times[1:])]
    assert all(0.3 < gap < 1.0 for gap in gaps), gaps  # once an interval: none skipped or doubled
    firsts = sorted(times[0] for times in arrivals)
    assert firsts[-1] - firsts[0] > 0.15, "the clients were pinged in more than one slice"
    for client in clients:
        await client.send(type="list_rooms")
        assert (await client.expect("room_list"))["rooms"] is not None


async def test_a_client_that_never_pongs_is_closed_with_1000(make_node, connect) -> None:
    node = await make_node(ping_interval=0.1, ping_timeout=0.3)
    client = await connect(node)
    code, reason = await client.expect_close(timeout=2)
    assert (code, reason) == (1000, "Ping timeout")


async def test_protocol_level_pings_are_answered(connect: ClientFactory) -> None:
    client = await connect(autoping=False)  # so that aiohttp hands the pong to the test
    await client.ws.ping(b"are you there")
    message = await client.ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.PONG and message.data == b"are you there"


async def test_shutdown_tells_every_client_then_closes_with_1001(node, member) -> None:
    clients = [await member(f"user{n}") for n in range(3)]
    await node.server.app.shutdown()
    for client in clients:
        notice = await client.skip_to("server_shutdown")
        assert notice["reconnect"] is True and 0 <= notice["retryAfterMs"] <= 1000
        assert await client.expect_close() == (1001, "Server shutting down")


async def test_sigterm_stops_the_process_with_exit_code_0() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "--port", str(port), "--shutdown-timeout", "3",
        "--presence-grace", "1",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            ws = await _connect_when_listening(http, f"http://127.0.0.1:{port}/ws")
            await ws.send_str('{"type":"auth","name":"alice"}')
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "auth_success"
            process.send_signal(signal.SIGTERM)
            shutdown = json.loads((await ws.receive(timeout=5)).data)
            assert (shutdown["type"], shutdown["reconnect"]) == ("server_shutdown", True)
            close = await ws.receive(timeout=5)
            assert (close.type, close.data, close.extra) == (
                aiohttp.WSMsgType.CLOSE, 1001, "Server shutting down")
        assert await asyncio.wait_for(process.wait(), 5) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _connect_when_listening(http: aiohttp.ClientSession, url: str
                                  ) -> aiohttp.ClientWebSocketResponse:
    for _ in range(100):
        try:
            return await http.ws_connect(url)
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens at {url}")


@pytest.mark.parametrize("where", ["missing socket directory", "taken port"])
async def test_a_node_that_cannot_listen_exits_non_zero_at_once(
        where: str, backend: str, redis_url: str, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if where == "taken port" else free_port()
        args = ["--port", str(port)]
        if where == "missing socket directory":
            args += ["--unix-socket", str(tmp_path / "missing" / "node.sock")]
        if backend == "redis":
            args += ["--redis-url", redis_url]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "node", *args, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(process.communicate(), 10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 1
    assert b"cannot listen where it was told to" in err
