"""Presence writes of one node and its resync, kept apart.

A resync writes back what the node holds (its members, its names) as one snapshot. A leave
whose write reached Redis between the snapshot and the resync's write was undone by it: the
member stayed listed for good (issue 29, a node paused past its TTL). So a node's presence
writes pass the gate together, any number at once, and a resync passes it alone: it waits
for the writes in flight, and new ones wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class ResyncGate:
    def __init__(self) -> None:
        self._writes = 0
        self._resyncing = False
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        """Around one presence write: together with others, never during a resync."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._resyncing)
            self._writes += 1
        try:
            yield
        finally:
            async with self._changed:
                self._writes -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def resync(self) -> AsyncIterator[None]:
        """Around taking the snapshot and writing it: alone."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._resyncing)
            self._resyncing = True
            await self._changed.wait_for(lambda: self._writes == 0)
        try:
            yield
        finally:
            async with self._changed:
                self._resyncing = False
                self._changed.notify_all()
