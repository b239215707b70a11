"""Per-connection rate limiting: token buckets, and a flood guard for clients that ignore them."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """`burst` events at once and `per_second` after that: a token bucket kept as the
    generic cell rate algorithm, whose whole state is one number, the time at which the
    bucket is full again. The owner keeps that number and one shared `Rate` holds the
    rest: every connection has two buckets, and an object for each would cost ~100 bytes."""

    per_second: float
    burst: int

    def take(self, full_at: float, now: float) -> float | None:
        """Take a token from the bucket that is full at `full_at`: when it is full again
        after this, or None when it is empty (nothing taken)."""
        start = full_at if full_at > now else now
        if (start - now) * self.per_second > self.burst - 1 + _ROUNDING:
            return None
        return start + 1.0 / self.per_second


# A thousandth of a token: times are large floats (seconds of a monotonic clock) and sums of
# 1/rate drift, and the last token of a burst must not be lost to rounding.
_ROUNDING = 1e-3


@functools.cache
def shared_rate(per_second: float, burst: int) -> Rate:
    """The one `Rate` of these figures, which every connection refers to."""
    return Rate(per_second, burst)


class FloodGuard:
    """Counts rejected frames; more than `limit` within `window` seconds means closing.
    Made at a client's first rejected frame: most never have one."""

    __slots__ = ("_limit", "_window", "_rejections")

    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window = window
        self._rejections: deque[float] = deque(maxlen=limit + 1)

    def reject(self, now: float) -> bool:
        """Record one rejection; True when the client has flooded past the limit."""
        self._rejections.append(now)
        return (
            len(self._rejections) > self._limit
            and now - self._rejections[0] <= self._window
        )


@dataclass(frozen=True, slots=True)
class Budget:
    """An allowance shared by the whole cluster (a user's messages, an address's, a user's
    room creations): a token bucket of `limit` events at once, refilled at `limit` per
    `window` seconds. A bucket, not counts in windows aligned to the clock: a sender must
    not get twice the limit by spending it either side of a window's edge."""

    kind: str
    name: str
    limit: int
    window: float

    @property
    def bucket(self) -> str:
        """The name of this budget's bucket, the same on every node."""
        return f"{self.kind}:{self.name}"

    def key(self, now: float) -> str:
        """This budget in the window of wall-clock time `now`: what a node may hold of it
        lives no longer than a window."""
        return f"{self.bucket}:{now // self.window:.0f}"

    @property
    def rate(self) -> Rate:
        return shared_rate(self.limit / self.window, self.limit)


def per_second(kind: str, name: str, rate: float, burst: int) -> Budget:
    """A budget of `rate` events a second that allows `burst` at once."""
    return Budget(kind, name, burst, burst / rate)


class Budgets:
    """Budgets in memory (the embedded mode's node/backends/redis/lua/lib/budget.lua): the
    time each bucket is full again. Full buckets are dropped as the table grows, so it holds only
    budgets in use now."""

    __slots__ = ("_full_at",)

    def __init__(self) -> None:
        self._full_at: dict[str, float] = {}

    def take_all(self, budgets: Sequence[Budget], now: float) -> Budget | None:
        """Take one event from every budget, or from none: returns the spent one, if any."""
        taken: list[tuple[str, float]] = []
        for budget in budgets:
            full_at = budget.rate.take(self._full_at.get(budget.bucket, now), now)
            if full_at is None:
                return budget
            taken.append((budget.bucket, full_at))
        self._full_at.update(taken)
        if len(self._full_at) > 4096:
            self._full_at = {k: v for k, v in self._full_at.items() if v > now}
        return None
