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
        self._empty = asyncio.Event()

    def discard(self, connection: Connection) -> None:
        self.sessions.discard(connection)
        if not self.sessions:
            self._empty.set()

    async def emptied(self) -> None:
        if self.sessions:
            await self._empty.wait()


class Connection:
    def __init__(self, hub: Sessions, open_: bool, leaving_with: Connection | None = None
                 ) -> None:
        self.hub, self.open, self.drained, self.told = hub, open_, False, 0
        self.leaving_with = leaving_with  # a departure handled by the time this one closes
        hub.sessions.add(self)

    def send(self, frame: bytes) -> None:
        self.told += 1

    def close_soon(self, reason: Any) -> None:
        self.open = False
        self.hub.discard(self)
        if self.leaving_with is not None:
            self.hub.discard(self.leaving_with)


async def _none() -> None:
    return None


async def test_a_client_that_left_before_the_drain_costs_no_turn() -> None:
    hub = Sessions()
    left = Connection(hub, open_=False)  # its close is being handled: still in the hub
    staying = [Connection(hub, open_=True, leaving_with=left)]
    drainer = Drainer("node1", WINDOW, cast(Hub, hub), MemoryCoordination("node1"), _none)
    async with asyncio.timeout(WINDOW / 4):
        await drainer.drain_for_shutdown()
    assert [c.told for c in staying] == [1] and left.told == 0 and not left.drained
