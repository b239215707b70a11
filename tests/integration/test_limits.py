"""Every limit at its edge: rate, flood, frame size, binary frames, connections, buffers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import aiohttp
import pytest

from node.runtime import NODE
from tests.conftest import ClientFactory
from tests.frames import client as client_frame


async def _joined(make_node, connect: ClientFactory, name: str = "alice", **settings):
    node = await make_node(**settings)
    client = await connect(node)
    await client.auth(name)
    await client.join()
    return node, client


async def test_burst_is_allowed_and_the_next_frame_is_dropped(make_node, connect) -> None:
    # auth and join take two tokens of the burst of five
    node, alice = await _joined(make_node, connect, rate=0.01, burst=5)
    for n in range(3):
        await alice.say(f"ok{n}")
        assert (await alice.expect("message"))["text"] == f"ok{n}"
    await alice.say("dropped")
    await alice.expect_error("rate_limited")


async def test_joins_beyond_the_join_burst_are_refused(make_node, connect) -> None:
    """Each join reads a room's history and roster: a loop of re-joins is bounded."""
    node, alice = await _joined(make_node, connect, join_rate=0.01, join_burst=3)
    for room in ("second", "general"):  # the first join took one of the three
        assert (await alice.join(room))["room"] == room
    await alice.send(type="join", room="general")  # the same room again: a join too
    await alice.expect_error("rate_limited")
    await alice.say("still in general")  # messages have their own bucket
    assert (await alice.expect("message"))["text"] == "still in general"


async def test_an_address_starts_only_so_many_new_users_a_minute(make_node, connect) -> None:
    """Each fresh anonymous user would start every per-user allowance afresh."""
    node = await make_node(address_identities_per_minute=2)
    first = await connect(node)
    identity = await first.auth("first")
    await (await connect(node)).auth("second")
    third = await connect(node)
    await third.send(type="auth", name="third")
    error = await third.expect_error("rate_limited")
    assert "resume with your userId" in error["message"]
    again = await connect(node)  # a user resuming is not a new one
    assert (await again.resume(identity, name="first"))["userId"] == identity["userId"]


async def test_rate_limited_messages_are_not_delivered(make_node, connect) -> None:
    node, alice = await _joined(make_node, connect, rate=20.0, burst=3)
    bob = await connect(node)
    await bob.auth("bob")
    await bob.join()
    await alice.expect("user_joined")
    await alice.say("one")  # the third token of the burst
    await alice.say("dropped")
    # The error is the node's direct answer; the message comes back through the broker:
    # the two may arrive in either order.
    replies = sorted([await alice.recv(), await alice.recv()], key=lambda e: e["type"])
    assert [(e["type"], e.get("text"), e.get("code")) for e in replies] == [
        ("error", None, "rate_limited"), ("message", "one", None)]
    await asyncio.sleep(0.1)  # refill: 20 tokens/s
    await alice.say("two")
    assert [(await bob.expect("message"))["text"] for _ in range(2)] == ["one", "two"]


async def test_flooding_past_the_limit_closes_with_1008(make_node, connect) -> None:
    node = await make_node(rate=0.01, burst=1, flood_limit=3, flood_window=10.0)
    client = await connect(node)
    await client.send(type="ping")
    await client.expect("pong")
    for _ in range(3):
        await client.send(type="ping")
        await client.expect_error("rate_limited")
    await client.send(type="ping")
    await client.expect_error("rate_limited")
    code, reason = await client.expect_close()
    assert code == 1008 and reason == "Rate limit exceeded"


async def test_binary_frames_close_with_1003(connect: ClientFactory) -> None:
    client = await connect()
    await client.ws.send_bytes(b"\x00\x01")
    code, _ = await client.expect_close()
    assert code == 1003


async def test_frames_over_max_frame_close_with_1009(make_node, connect) -> None:
    node = await make_node(max_frame=200, max_text=1000)
    client = await connect(node)
    await client.auth()
    await client.join()
    fits = '{"type":"message","text":"' + "x" * (200 - 28) + '"}'
    assert len(fits) == 200
    await client.ws.send_str(fits)
    assert len((await client.expect("message"))["text"]) == 172
    await client.ws.send_str(fits[:-2] + 'x"}')
    code, _ = await client.expect_close()
    assert code == 1009


async def test_connections_beyond_the_limit_get_503(make_node, connect) -> None:
    node = await make_node(max_connections=2)
    await connect(node)
    await connect(node)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(node)
    assert refused.value.status == 503
    assert (await node.get("/readyz")).status == 503


async def test_a_client_that_stops_reading_is_closed_as_slow(make_node, connect) -> None:
    node = await make_node(max_buffer=256 * 1024, max_text=60000, max_frame=70000)
    reader = await connect(node)
    await reader.auth("slow")
    await reader.join()
    writer = await connect(node)
    await writer.auth("fast")
    await writer.join()
    transport = reader.ws._response.connection.transport  # aiohttp has no public pause
    transport.pause_reading()  # a client that stops reading
    text = "z" * 50000
    for _ in range(400):  # up to 20 MB: more than the kernel buffers between the two
        await writer.say(text)
        event = await writer.recv()
        if event["type"] == "user_left":
            break
        assert event["type"] == "message"
    assert event == {"type": "user_left", "user": "slow", "userId": reader.user_id,
                     "room": "general", "userCount": 1, "presence": event["presence"]}
    transport.resume_reading()
    code, reason = await reader.expect_close(timeout=10)
    assert code == 1013 and reason == "Slow consumer"


async def _send_ok(client) -> None:
    await client.say("ok")
    assert (await client.expect("message"))["text"] == "ok"


async def test_reconnecting_does_not_reset_the_users_message_budget(make_node, connect) -> None:
    node = await make_node(user_rate=1e-6, user_burst=3)
    first = await connect(node)
    identity = await first.auth("alice")
    await first.join()
    for _ in range(3):
        await _send_ok(first)
    await first.close()
    again = await connect(node)
    await again.resume(identity)
    await again.join()
    await again.say("one too many")
    error = await again.expect_error("rate_limited")
    assert "user" in error["message"]


async def test_parallel_connections_share_the_users_message_budget(make_node, connect) -> None:
    node = await make_node(user_rate=1e-6, user_burst=3)
    first = await connect(node)
    identity = await first.auth("alice")
    await first.join()
    second = await connect(node)
    await second.resume(identity)
    await second.join()
    await _send_ok(first)
    await second.expect("message")
    await _send_ok(second)
    await first.expect("message")
    await _send_ok(first)
    await second.expect("message")
    await second.say("fourth")
    await second.expect_error("rate_limited")


async def test_one_address_shares_one_message_budget(make_node, connect) -> None:
    node = await make_node(address_rate=1e-6, address_burst=2)
    alice = await connect(node)
    await alice.auth("alice")
    await alice.join("quiet")
    bob = await connect(node)
    await bob.auth("bob")
    await bob.join("other")
    await _send_ok(alice)
    await _send_ok(bob)
    await alice.say("third from 127.0.0.1")
    error = await alice.expect_error("rate_limited")
    assert "address" in error["message"]


async def _non_reader(port: int) -> socket.socket:
    """A WebSocket client that completes its handshake and then never reads (a receive
    buffer of a few KiB, so that what it is sent waits in the node)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):  # a byte at a time: nothing past the head
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_an_address_whose_sockets_do_not_read_is_closed_past_its_output_ceiling(
        make_node, connect) -> None:
    """Each join makes the node queue the room's history; sockets that never read would
    pile that up in the node's memory but for the ceiling on what one address may queue."""
    ceiling = 1_000_000  # far below what --max-buffer lets each socket queue: this trips
    node = await make_node(max_address_output=ceiling, max_node_output=100 * ceiling,
                           max_buffer=64 * ceiling, history_reply_bytes=ceiling)
    state = node.server.app[NODE]
    writer = await connect(node)
    await writer.auth("writer")
    await writer.join("big")
    for _ in range(20):  # a history of about 200 kB: each join's reply
        await writer.say("x" * 10_000)
    for _ in range(20):
        await writer.expect("message")
    attackers = [await _non_reader(node.server.port) for _ in range(4)]
    try:
        loop = asyncio.get_running_loop()
        for n, sock in enumerate(attackers):
            frames = [client_frame(0x1, json.dumps({"type": "auth", "name": f"a{n}"}).encode())]
            # 6 MB each: past what the kernel holds for a socket that does not read (its
            # send buffer grows to 4 MiB on loopback), the rest waits in the node
            frames += [client_frame(0x1, b'{"type":"join","room":"big"}')] * 30
            await loop.sock_sendall(sock, b"".join(frames))
        peak = 0
        async with asyncio.timeout(30):  # until every attacker is closed and gone
            while len(state.hub.sessions) > 1:
                peak = max(peak, state.output.queued_by("127.0.0.1"))
                await asyncio.sleep(0.01)
        assert state.metrics.closes["1013"] == len(attackers)
        # Past the ceiling, a socket is closed at its next write: at most one reply each over.
        assert ceiling < peak <= ceiling + len(attackers) * 250_000, peak
        assert state.output.total == 0
        await writer.say("the node is still here for those who read")
        assert (await writer.skip_to("message"))["text"].startswith("the node is still")
    finally:
        for sock in attackers:
            sock.close()
