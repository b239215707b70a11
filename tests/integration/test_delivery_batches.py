"""A busy client's room events share writes (--write-delay): all arrive, in order, and
nothing the server sends later overtakes them."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_drain import AUTH, TOKEN
from tests.integration.test_metrics import _scrape

TEXTS = [f"m{i}" for i in range(20)]
pytestmark = pytest.mark.timeout(30)


async def _alice_and_bob(node, connect):  # type: ignore[no-untyped-def]
    clients = []
    for name in ("bob", "alice"):
        client = await connect(node)
        await client.auth(name)
        await client.join("general")
        clients.append(client)
    bob, alice = clients
    await bob.expect("user_joined")
    return alice, bob


async def _texts(client, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [(await client.skip_to("message"))["text"] for _ in range(count)]


async def _fanned_out(node, frames: int) -> None:  # type: ignore[no-untyped-def]
    """Wait until the node has written or batched `frames` room frames."""
    async with asyncio.timeout(5):
        while (await _scrape(node))["chat_frames_delivered_total", ()] < frames:
            await asyncio.sleep(0.01)


async def test_a_busy_clients_events_arrive_all_and_in_order_in_shared_writes(
    make_node, connect
) -> None:
    node = await make_node(write_delay=0.05)
    alice, bob = await _alice_and_bob(node, connect)
    for text in TEXTS:
        await alice.say(text)
    assert await _texts(bob, len(TEXTS)) == TEXTS
    assert await _texts(alice, len(TEXTS)) == TEXTS
    metrics = await _scrape(node)
    assert metrics["chat_batched_frames_total", ()] > metrics["chat_batched_writes_total", ()] > 0


async def test_without_a_write_delay_each_event_is_written_at_once(make_node, connect) -> None:
    node = await make_node(write_delay=0)
    alice, bob = await _alice_and_bob(node, connect)
    for text in TEXTS:
        await alice.say(text)
    assert await _texts(bob, len(TEXTS)) == TEXTS
    assert (await _scrape(node))["chat_batched_writes_total", ()] == 0


async def test_below_the_busy_rate_each_event_is_written_at_once_whatever_the_delay(
    make_node, connect
) -> None:
    node = await make_node(write_delay=1.0, busy_rate=1_000_000)  # a token every microsecond
    alice, bob = await _alice_and_bob(node, connect)
    for text in TEXTS:
        await alice.say(text)
    assert await _texts(bob, len(TEXTS)) == TEXTS
    assert (await _scrape(node))["chat_batched_writes_total", ()] == 0


async def test_a_drain_notice_comes_after_the_events_waiting_for_the_tick(make_node, connect
                                                                         ) -> None:
    node = await make_node(write_delay=1.0, admin_token=TOKEN, drain_window=0.5,
                           presence_grace=0.5)
    alice, bob = await _alice_and_bob(node, connect)
    for text in TEXTS:
        await alice.say(text)
    await _fanned_out(node, 1 + 2 * len(TEXTS))  # bob's user_joined, both members' messages
    assert (await node.post("/admin/drain?force=1", headers=AUTH)).status == 202
    events = []
    while (event := await bob.recv())["type"] != "server_shutdown":
        events.append(event)
    assert [event["text"] for event in events if event["type"] == "message"] == TEXTS
