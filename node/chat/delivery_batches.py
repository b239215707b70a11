"""Room events held for a moment, so that a busy connection gets several in one write.

Writing one frame costs a node about as much in the kernel as the rest of a delivery (a
`send` on the client's socket, which on loopback also runs the client's TCP receive). A
connection that is sent up to `--busy-rate` room events a second gets each at once; one that
is sent more is busy: its room events are gathered and written together once per tick
(`--write-delay`) until a tick finds none, as Centrifugo PRO's `client.write_delay` does,
only without delaying the connections that are not busy. Replies to a client's own requests
are never held.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from node.ratelimit import Rate

BURST = 4  # room events written at once after a quiet spell before the tick takes over


class Held(Protocol):
    """A connection whose room events wait for the tick."""

    def flush(self) -> None: ...


class DeliveryBatches:
    """The node's busy connections, and the one timer that writes their events.

    A connection may write `BURST` room events at once and `rate` a second after that
    (`writes`, a token bucket each connection keeps the state of); past it, it is busy: its
    events wait for the next tick, at most `delay` later, and it stays on the tick for as
    long as every tick has something to write. Two figures, not one: the rate says who is
    busy, so that a client sent 25 events a second still gets each at once, and the delay
    says how often a busy client is written to, so that one sent 150 a second costs the node
    20 writes a second instead of 50 (docs/performance-history.md, *Who is busy, and how often a
    busy client is written*). The timer runs only while some connection is busy.
    """

    __slots__ = ("writes", "_delay", "_waiting", "_timer")

    def __init__(self, delay: float, rate: float) -> None:
        self.writes: Rate | None = Rate(rate, BURST) if delay > 0 else None
        self._delay = delay
        self._waiting: list[Held] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: Held) -> None:
        """Have `connection.flush()` called at the next tick."""
        self._waiting.append(connection)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._tick)

    def _tick(self) -> None:
        waiting, self._waiting = self._waiting, []
        self._timer = None
        for connection in waiting:
            connection.flush()
