"""Every open socket of this node, by kind and by client address, and the limits on them."""

from __future__ import annotations

import enum
from collections import Counter
from typing import Protocol

Refusal = tuple[int, str, str]  # HTTP status, reason phrase, message

LIMIT_REACHED: Refusal = (503, "Service Unavailable", "connection limit reached")
ADDRESS_LIMIT_REACHED: Refusal = (429, "Too Many Requests",
                                  "too many connections from this address")


class Kind(enum.StrEnum):
    PENDING = "pending"  # its first request head is not complete yet
    HTTP = "http"
    CHAT = "chat"
    ECHO = "echo"


class Counted(Protocol):
    kind: Kind
    address: str | None


class Connections:
    """Counts sockets from accept to close, whatever serves them, so that every socket takes
    one of --max-connections and one of its address's --max-connections-per-address."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self._max_total = max_total
        self._max_per_address = max_per_address
        self._kinds: Counter[Kind] = Counter()
        self._addresses: Counter[str] = Counter()
        self.total = 0

    @property
    def full(self) -> bool:
        return self.total >= self._max_total

    @property
    def overrun(self) -> bool:
        """So far past the limit that even an answer is too much: close at once."""
        return self.total > 2 * self._max_total

    def add(self, socket: Counted) -> Refusal | None:
        """A new socket; the refusal it gets once its request is read, if over the limit."""
        refusal = LIMIT_REACHED if self.full else None
        self.total += 1
        self._kinds[socket.kind] += 1
        return refusal

    def place(self, socket: Counted, address: str) -> Refusal | None:
        """The socket's client address is known: count it there."""
        socket.address = address
        self._addresses[address] += 1
        if self._addresses[address] > self._max_per_address:
            return ADDRESS_LIMIT_REACHED
        return None

    def retype(self, socket: Counted, kind: Kind) -> None:
        self._kinds[socket.kind] -= 1
        self._kinds[kind] += 1
        socket.kind = kind

    def remove(self, socket: Counted) -> None:
        self.total -= 1
        self._kinds[socket.kind] -= 1
        if socket.address is not None:
            self._addresses[socket.address] -= 1
            if not self._addresses[socket.address]:
                del self._addresses[socket.address]

    def by_kind(self) -> dict[str, int]:
        return {kind.value: self._kinds[kind] for kind in Kind}
