"""Entries that hold until a time (Unix seconds), as Redis keys with a TTL do: the memory
backends' mutes and bans."""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    def __init__(self) -> None:
        self._until: dict[K, float] = {}

    def set(self, key: K, until: float) -> None:
        """`key` holds until `until`; a time past removes it. Ended entries go now (their
        only writer is the server API: the map stays small)."""
        now = time.time()
        for ended in [other for other, end in self._until.items() if end <= now]:
            del self._until[ended]
        if until > now:
            self._until[key] = until
        else:
            self._until.pop(key, None)

    def until(self, key: K) -> float | None:
        """When `key` ends, or None when it does not hold."""
        until = self._until.get(key)
        return until if until is not None and until > time.time() else None
