"""Admission: how many chat handshakes a node works on at once.

A session costs the most between its upgrade and its first `room_joined`: authentication,
the name claim, the join script and the history read, each a Redis round trip. When a burst
arrives (every client of a crashed node reconnecting at once), taking all of it makes every
handshake slow, until clients time out and retry into the same jam. Past `backlog` unfinished
handshakes the node instead answers the upgrade at once with 503 and `Retry-After`, which
costs it one short response: nginx tries the next node, and a client waits and comes back.

A handshake is finished by the session's first `room_joined`, by its end, or after `window`
seconds (a client may authenticate and stay out of rooms: it no longer counts then).

How long a refused client waits (`retry_after`) spreads a crowd over the time the node needs
for it: all told "1 s", a crash's clients came back together second after second, most of
them to be refused again, each refusal costing the node and nginx a connection
(docs/performance-history.md, *Admission in a storm*). The crowd refused over the last
second, divided by the handshakes finished over it (at least the backlog: a node that was
idle until the crowd came has no rate yet), says how many seconds the node needs for them;
each is told a whole number of seconds drawn evenly from 1 to that.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Hashable

MAX_RETRY_AFTER = 30  # seconds a refused client is told to wait at most


class Admission:
    def __init__(self, backlog: int, window: float) -> None:
        self._backlog = backlog
        self._window = window
        self._unfinished: dict[Hashable, asyncio.TimerHandle] = {}
        # Refused and finished handshakes the last second and this one
        self._second = int(time.monotonic())
        self._refused = [0, 0]
        self._finished = [0, 0]

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
            self._roll()
            self._finished[1] += 1

    def retry_after(self) -> int:
        """Seconds a client refused now should wait: from 1 to the seconds the node needs for
        everyone refused lately at the rate it finishes handshakes, drawn evenly."""
        self._roll()
        self._refused[1] += 1
        # Refused clients come back a second later at the soonest: a second's refusals are the
        # crowd. A node that was not admitting has no recent rate: it takes its backlog a second.
        crowd = max(self._refused)
        rate = max(1, self._backlog, self._finished[0], self._finished[1])
        return random.randint(1, max(1, min(MAX_RETRY_AFTER, math.ceil(crowd / rate))))

    def _roll(self) -> None:
        second = int(time.monotonic())
        if second != self._second:
            gone = min(second - self._second, 2)
            self._refused = self._refused[gone:] + [0] * gone
            self._finished = self._finished[gone:] + [0] * gone
            self._second = second
