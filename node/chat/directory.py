"""The room directory as this node serves it: pages cached for a moment.

Listing is open to anyone (`list_rooms` before `auth`, `GET /api/rooms`), and each page costs
the backend a script over up to 100 rooms: without a cache, a thousand sockets asking ten
times a second would be a million Redis operations a second. A page is at most `FRESH`
seconds old instead (the per-node snapshot the hostile-input issue allows).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from node.backends.presence import Presence, RoomPage

FRESH = 1.0  # seconds a page is served from this node's copy
PAGES = 64  # distinct pages kept; a client walking far pages only evicts its own


class Directory:
    def __init__(self, presence: Presence, clock: Callable[[], float] = time.monotonic) -> None:
        self._presence = presence
        self._clock = clock
        self._pages: dict[tuple[int, int], tuple[float, RoomPage]] = {}

    async def page(self, offset: int, limit: int) -> RoomPage:
        now = self._clock()
        cached = self._pages.get((offset, limit))
        if cached is not None and now - cached[0] < FRESH:
            return cached[1]
        page = await self._presence.rooms(offset, limit)
        if len(self._pages) >= PAGES:
            self._pages = {k: v for k, v in self._pages.items() if now - v[0] < FRESH}
        if len(self._pages) < PAGES:
            self._pages[(offset, limit)] = (now, page)
        return page
