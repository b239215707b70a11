"""A drain paces the closes of the clients still there, not of those that already left."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from node.backends.memory.coordination import MemoryCoordination
from node.chat.hub import Hub
from node.drain import Drainer

WINDOW = 10.0  # seconds: a wait for the client that left would be half of it

pytestmark = pytest.mark.timeout(10)


class Sessions:
    """A hub's sessions, as the drain sees them."""

    def __init__(self) -> None:
        self.sessions: set[Connection] = set()

    async def emptied(self) -> None:
        while self.sessions:
            await asyncio.sleep(0.01)


class Connection:
    def __init__(self, hub: Sessions, open_: bool) -> None:
        self.hub, self.open, self.drained, self.told = hub, open_, False, 0
        hub.sessions.add(self)

    def send(self, frame: bytes) -> None:
        self.told += 1

    def close_soon(self, reason: Any) -> None:
        self.open = False
        self.hub.sessions.discard(self)


async def _none() -> None:
    return None


async def test_a_client_that_left_before_the_drain_costs_no_turn() -> None:
    hub = Sessions()
    left = Connection(hub, open_=False)  # its close is being handled: still in the hub
    staying = [Connection(hub, open_=True)]
    drainer = Drainer("node1", WINDOW, cast(Hub, hub), MemoryCoordination("node1"), _none)

    async def gone() -> None:
        await asyncio.sleep(0.1)
        hub.sessions.discard(left)

    asyncio.get_running_loop().create_task(gone())
    async with asyncio.timeout(WINDOW / 4):
        await drainer.drain_for_shutdown()
    assert [c.told for c in staying] == [1] and left.told == 0 and not left.drained
