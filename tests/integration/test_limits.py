"""Every limit at its edge: rate, flood, frame size, binary frames, connections, buffers."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.conftest import ClientFactory


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
