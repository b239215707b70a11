"""Bytes queued to peers that do not read, budgeted by client address and for the whole node.

`--max-buffer` bounds one connection; an address with hundreds of sockets that never read
(each made to queue a large reply, say a join's history) would still take the node's memory.
So the bytes queued to all the sockets of one client address, and to all sockets of the node,
have ceilings: a socket written to while its address, or the node, is past one is closed with
1013 (try again later), the slow ones going first since only they queue anything.

Each socket reports what its transport holds after every write (nothing, for a peer that
keeps up: the common case costs a comparison). A count can go stale when a peer drains
without being written to again, so before anyone is closed the counts involved are taken
afresh, at most once per REFRESH_EVERY, so that a node at its ceiling does not spend its time
recounting.
"""

from __future__ import annotations

import time
from typing import Protocol

REFRESH_EVERY = 0.1  # seconds between fresh counts of an address's or the node's queues


class Queue(Protocol):
    """A socket's outbound queue."""

    def queued(self) -> int:
        """Bytes waiting for the peer now."""
        ...


class OutputBudget:
    def __init__(self, per_address: int, per_node: int) -> None:
        self.per_address = per_address
        self.per_node = per_node
        self.total = 0
        self._counts: dict[str, dict[Queue, int]] = {}  # address -> queue -> bytes counted
        self._sums: dict[str, int] = {}
        self._refreshed: dict[str | None, float] = {}  # address (None: the node) -> when

    def account(self, address: str, queue: Queue, queued: int) -> bool:
        """Count `queued` bytes for `queue` of `address`; False when the address or the node
        is past its ceiling even counted afresh (then close `queue`)."""
        self._set(address, queue, queued)
        if self._sums.get(address, 0) > self.per_address:
            self._refresh(address)
        if self.total > self.per_node:
            self._refresh(None)
        return self._sums.get(address, 0) <= self.per_address and self.total <= self.per_node

    def forget(self, address: str, queue: Queue) -> None:
        """The socket is gone: nothing of it counts any more."""
        self._set(address, queue, 0)

    def queued_by(self, address: str) -> int:
        return self._sums.get(address, 0)

    def _set(self, address: str, queue: Queue, queued: int) -> None:
        counts = self._counts.get(address)
        before = counts.get(queue, 0) if counts is not None else 0
        if queued == before:
            return
        if counts is None:
            counts = self._counts[address] = {}
        if queued:
            counts[queue] = queued
        else:
            del counts[queue]
        self.total += queued - before
        self._sums[address] = self._sums.get(address, 0) + queued - before
        if not counts:
            del self._counts[address], self._sums[address]
            self._refreshed.pop(address, None)

    def _refresh(self, address: str | None) -> None:
        """Count the queues of `address` (None: of every address) afresh, unless done lately."""
        now = time.monotonic()
        if now - self._refreshed.get(address, 0.0) < REFRESH_EVERY:
            return
        self._refreshed[address] = now
        addresses = [address] if address is not None else list(self._counts)
        for each in addresses:
            for queue in list(self._counts.get(each, {})):
                self._set(each, queue, queue.queued())
