"""The node's background loops survive any error, not only the ones Redis raises: a bug below
them must not leave a node that looks ready and delivers nothing."""

from __future__ import annotations

import asyncio

import pytest

from node.runtime import NODE


@pytest.fixture
def backend() -> str:
    return "redis"


async def test_the_subscriber_survives_an_unexpected_error(make_node, connect) -> None:
    node = await make_node()
    broker = node.server.app[NODE].broker
    pubsub = broker._pubsub  # the loop's own reader: where a redis-py bug would surface
    real = pubsub.get_message
    failed = asyncio.Event()

    async def broken_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not failed.is_set():
            failed.set()
            raise RuntimeError("injected")
        return await real(*args, **kwargs)

    pubsub.get_message = broken_once
    alice = await connect(node)
    await alice.auth("alice")
    await alice.join("general")
    await asyncio.wait_for(failed.wait(), 5)
    for attempt in range(100):  # until the subscriber is back: a message makes the round trip
        await alice.say(f"after {attempt}")
        event = await alice.recv()
        if event["type"] == "message":
            break
        assert event == {"type": "error", "code": "unavailable", "message": event["message"]}
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("delivery never resumed")


async def test_presence_upkeep_survives_an_unexpected_error(make_node) -> None:
    node = await make_node(node_ttl=0.4)  # a tick every 0.1 s
    coordination = node.server.app[NODE].coordination
    real = coordination.heartbeat
    calls = 0

    async def broken_once() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected")
        return await real()

    coordination.heartbeat = broken_once
    for _ in range(100):
        if calls >= 3:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the upkeep stopped after {calls} ticks")
