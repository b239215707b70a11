"""Room events held for a moment, so that a busy connection gets several in one write.

Writing one frame costs a node about as much in the kernel as the rest of a delivery (a
`send` on the client's socket, which on loopback also runs the client's TCP receive). A
connection that receives a message now and then gets each at once; one that receives more
than a write every `--write-delay` gets its room events gathered and written together once
per tick, as Centrifugo PRO's `client.write_delay` does, only without delaying the
connections that are not busy. Replies to a client's own requests are never held.
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
    """The node's connections with room events waiting, and the one timer that writes them.

    A connection may write `BURST` room events at once and one every `delay` seconds after
    that (`writes`, a token bucket each connection keeps the state of); past it, its events
    join a batch that goes out at the next tick, at most `delay` later, and that write
    spends a token too. The timer runs only while some connection has a batch.
    """

    __slots__ = ("writes", "_delay", "_waiting", "_timer")

    def __init__(self, delay: float) -> None:
        self.writes: Rate | None = Rate(1.0 / delay, BURST) if delay > 0 else None
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
