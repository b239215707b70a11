"""Per-connection rate limiting: a token bucket, and a flood guard for clients that ignore it."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


class TokenBucket:
    """Allows `burst` frames at once and `rate` frames per second after that."""

    __slots__ = ("_rate", "_burst", "_tokens", "_updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def allow(self, now: float) -> bool:
        """Take one token if there is one."""
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FloodGuard:
    """Counts rejected frames; more than `limit` within `window` seconds means closing."""

    __slots__ = ("_limit", "_window", "_rejections")

    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window = window
        self._rejections: deque[float] | None = None  # made at the first rejection: most
        # clients never get one, and an empty deque costs ~700 bytes per connection

    def reject(self, now: float) -> bool:
        """Record one rejection; True when the client has flooded past the limit."""
        if self._rejections is None:
            self._rejections = deque(maxlen=self._limit + 1)
        self._rejections.append(now)
        return (
            len(self._rejections) > self._limit
            and now - self._rejections[0] <= self._window
        )


@dataclass(frozen=True, slots=True)
class Budget:
    """An allowance shared by the whole cluster (a user's messages, an address's, a user's
    room creations): at most `limit` events in each `window` seconds, the windows aligned to
    the clock so that every node counts in the same one."""

    kind: str
    name: str
    limit: int
    window: float

    def key(self, now: float) -> str:
        """The name of this budget's count in the window of wall-clock time `now`."""
        return f"{self.kind}:{self.name}:{now // self.window:.0f}"


def per_second(kind: str, name: str, rate: float, burst: int) -> Budget:
    """A budget of `rate` events a second that allows `burst` at once: `burst` per window
    of burst / rate seconds."""
    return Budget(kind, name, burst, burst / rate)


class Budgets:
    """Budgets in memory (the embedded mode's `redis_support.LUA_BUDGET`). Counts of ended
    windows are dropped as the table grows, so it holds only budgets in use now."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}  # key -> count, end of its window

    def take_all(self, budgets: Sequence[Budget], now: float) -> Budget | None:
        """Take one event from every budget, or from none: returns the spent one, if any."""
        keys = [budget.key(now) for budget in budgets]
        for budget, key in zip(budgets, keys, strict=True):
            if self._counts.get(key, (0, 0.0))[0] >= budget.limit:
                return budget
        for budget, key in zip(budgets, keys, strict=True):
            count = self._counts.get(key, (0, 0.0))[0]
            self._counts[key] = (count + 1, (now // budget.window + 1) * budget.window)
        if len(self._counts) > 4096:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        return None
