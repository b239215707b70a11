"""A `BrokerEvents` for tests: records what a broker pushes, wants the rooms it is told."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from node.backends.envelope import Publication


class Recorder:
    def __init__(self) -> None:
        self.received: list[Publication] = []
        self.reconnects = 0
        self.wanted: set[str] = set()
        self._arrived = asyncio.Event()

    def publication(self, publication: Publication) -> None:
        self.received.append(publication)
        self._arrived.set()

    async def reconnected(self) -> None:
        self.reconnects += 1

    def wanted_rooms(self) -> Collection[str]:
        return self.wanted

    async def until(self, count: int, timeout: float = 5.0) -> list[Publication]:
        """The first `count` publications, once they have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received[:count]
