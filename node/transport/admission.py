"""Admission: how many chat handshakes a node works on at once.

A session costs the most between its upgrade and its first `room_joined`: authentication,
the name claim, the join script and the history read, each a Redis round trip. When a burst
arrives (every client of a crashed node reconnecting at once), taking all of it makes every
handshake slow, until clients time out and retry into the same jam. Past `backlog` unfinished
handshakes the node instead answers the upgrade at once with 503 and `Retry-After`, which
costs it one short response: nginx tries the next node, and a client waits and comes back.

A handshake is finished by the session's first `room_joined`, by its end, or after `window`
seconds (a client may authenticate and stay out of rooms: it no longer counts then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class Admission:
    def __init__(self, backlog: int, window: float) -> None:
        self._backlog = backlog
        self._window = window
        self._unfinished: dict[Hashable, asyncio.TimerHandle] = {}

    @property
    def full(self) -> bool:
        return len(self._unfinished) >= self._backlog

    @property
    def unfinished(self) -> int:
        return len(self._unfinished)

    def admit(self, session: Hashable) -> None:
        """Count the session's handshake until it is finished (callers check `full` first)."""
        loop = asyncio.get_running_loop()
        self._unfinished[session] = loop.call_later(self._window, self.finished, session)

    def finished(self, session: Hashable) -> None:
        """The session joined a room, ended, or took longer than the window; idempotent."""
        timer = self._unfinished.pop(session, None)
        if timer is not None:
            timer.cancel()
