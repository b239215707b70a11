"""Per-connection rate limiting: a token bucket, and a flood guard for clients that ignore it."""

from __future__ import annotations

from collections import deque


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


class Budgets:
    """GCRA budgets by name (users, addresses) in memory, as `redis_support.LUA_BUDGET` keeps
    them in Redis: one event per `interval` seconds, `burst` at once. A full budget is
    forgotten, so the table holds only names that spent something recently."""

    __slots__ = ("_arrivals",)

    def __init__(self) -> None:
        self._arrivals: dict[str, float] = {}  # name -> theoretical arrival time

    def allow(self, name: str, interval: float, burst: int, now: float, spend: bool = True
              ) -> bool:
        """Whether one more event fits; taken from the budget unless `spend` is False."""
        arrival = max(self._arrivals.get(name, now), now) + interval
        if arrival - now > burst * interval:
            return False
        if not spend:
            return True
        self._arrivals[name] = arrival
        if len(self._arrivals) > 1024 and len(self._arrivals) & 1023 == 0:
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        self._arrivals = {name: at for name, at in self._arrivals.items() if at > now}
