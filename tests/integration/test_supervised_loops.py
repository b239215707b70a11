"""The node's background loops survive any error, not only the ones Redis raises: a bug below
them must not leave a node that looks ready and delivers nothing."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from node.backends.redis.connection import PushConnection
from node.background import FAILURES
from node.chat import heartbeat
from node.runtime import NODE


@pytest.fixture
def backend() -> str:
    return "redis"


async def test_the_subscriber_survives_an_unexpected_error(make_node, connect,
                                                          monkeypatch) -> None:
    node = await make_node()
    subscriber = node.server.app[NODE].broker._subscriber
    real = PushConnection.open
    mended = asyncio.Event()

    async def broken_until_mended(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not mended.is_set():
            raise RuntimeError("injected")  # where a bug below the loop would surface
        return await real(*args, **kwargs)

    alice = await connect(node)
    await alice.auth("alice")
    await alice.join("general")
    monkeypatch.setattr(PushConnection, "open", broken_until_mended)
    subscriber._connection.close()  # the connection is lost: reconnecting now fails
    assert await _readiness_until(node, 503) == "broker unavailable"
    mended.set()
    await _readiness_until(node, 200)  # the loop lived on, with backoff, and reconnected
    await alice.say("after")
    assert (await alice.expect("message"))["text"] == "after"


async def test_presence_upkeep_survives_an_unexpected_error(make_node) -> None:
    node = await make_node(node_ttl=0.4)  # a tick every 0.1 s
    coordination = node.server.app[NODE].coordination
    real = coordination.heartbeat
    mended = asyncio.Event()
    calls = 0

    async def broken_until_mended(connections: int = 0) -> bool:
        nonlocal calls
        calls += 1
        if not mended.is_set():
            raise RuntimeError("injected")
        return await real(connections)

    coordination.heartbeat = broken_until_mended
    assert await _readiness_until(node, 503) == "presence upkeep failing"
    failed_calls = calls
    mended.set()
    await _readiness_until(node, 200)  # the loop lived on and recovered
    assert calls > failed_calls >= 1


async def _readiness_until(node, status: int) -> str | None:  # type: ignore[no-untyped-def]
    """/readyz's reason once it answers `status` (bounded)."""
    for _ in range(500):
        response = await node.get("/readyz")
        if response.status == status:
            return (await response.json()).get("reason")
        await asyncio.sleep(0.02)
    raise AssertionError(f"/readyz never answered {status}")


async def test_the_heartbeat_survives_an_unexpected_error(make_node, connect,
                                                         monkeypatch) -> None:
    """Issue 30: the heartbeat loop was not supervised: one exception ended the pings of
    the whole node, silently, with /readyz 200."""
    ours = 4.75  # this node's ping timeout, which no other test node has
    node = await make_node(ping_interval=0.2, ping_timeout=ours)
    real = heartbeat.ping
    failed = asyncio.Event()

    def broken_once(sessions, timeout):  # type: ignore[no-untyped-def]
        if timeout == ours and not failed.is_set():  # this node's, not another test node's
            failed.set()
            raise RuntimeError("injected into the heartbeat")
        return real(sessions, timeout)

    alice = await connect(node)
    await alice.auth("alice")
    await alice.join("general")
    before = FAILURES["heartbeat"]
    monkeypatch.setattr(heartbeat, "ping", broken_once)
    await asyncio.wait_for(failed.wait(), 5)
    assert await _readiness_until(node, 503) == "heartbeat failing"
    metrics = await (await node.get("/metrics")).text()
    assert f'chat_background_failures_total{{purpose="heartbeat"}} {before + 1}.0' in metrics
    await _readiness_until(node, 200)  # restarted with backoff, healthy once it has run
    restarted = heartbeat.now_ms()
    while not _ping_since(await alice.next_frame(), restarted):
        pass  # the pings go on after the restart
    await alice.say("after")
    assert (await alice.skip_to("message"))["text"] == "after"


def _ping_since(frame: aiohttp.WSMessage, since_ms: int) -> bool:
    """`frame` is a server ping sent at or after `since_ms` (recv skips pings: read frames)."""
    event = json.loads(frame.data)
    return event["type"] == "ping" and event["timestamp"] >= since_ms
