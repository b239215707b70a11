"""The in-memory broker of the embedded single-node mode."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from node.backends.broker import (
    AlreadyStored, BrokerEvents, BudgetSpent, HistoryWindow, Idempotency, Muted,
)
from node.backends.envelope import UNSEQUENCED, Publication, close
from node.backends.memory.deadlines import Deadlines
from node.ratelimit import Budget, Budgets


@dataclass(slots=True)
class _RoomLog:
    """Messages `seq - len(messages) + 1 .. seq`, oldest first."""

    seq: int
    messages: deque[bytes]
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)
    size: int = 0  # bytes of `messages`
    parent: str = ""  # the epoch `epoch` forked from


@dataclass(slots=True)
class MemoryBroker:
    """Delivers synchronously to the one local node; keeps `capacity` messages per room, and
    of them no more than `capacity_bytes` (but always the newest)."""

    capacity: int
    capacity_bytes: int
    _events: BrokerEvents | None = None
    _subscribed: set[str] = field(default_factory=set)
    _logs: dict[str, _RoomLog] = field(default_factory=dict)
    _budgets: Budgets = field(default_factory=Budgets)
    # idempotency key -> (seq, until when it holds), per room; dropped once past its window
    _sent: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)
    _muted: Deadlines[tuple[str, str]] = field(default_factory=Deadlines)  # (room, user)

    @property
    def ready(self) -> bool:
        return self._events is not None

    async def start(self, events: BrokerEvents) -> None:
        self._events = events

    async def close(self) -> None:
        self._events = None
        self._subscribed.clear()

    async def subscribe(self, room: str) -> None:
        self._subscribed.add(room)

    async def unsubscribe(self, room: str) -> None:
        self._subscribed.discard(room)

    async def publish_message(self, room: str, template: bytes, budgets: Sequence[Budget],
                              seen: int, seen_epoch: str = "",
                              idempotency: Idempotency | None = None, sender: str = "") -> int:
        self._spend(budgets)
        if self._muted.until((room, sender)) is not None:
            raise Muted(room)
        sent = self._sent_in(room)
        if idempotency is not None and idempotency.key in sent:
            raise AlreadyStored(sent[idempotency.key][0])
        log = self._log(room)
        # Never so in memory (it cannot lose what it numbered): what the contract says.
        if log.seq < seen and seen_epoch == log.epoch:
            log.seq, log.epoch, log.parent = seen, f"{uuid.uuid4().hex}.{seen}", log.epoch
            log.messages.clear()
            log.size = 0
        log.seq += 1
        payload = close((template,), log.seq)
        self._keep(log, payload)
        if idempotency is not None:
            sent[idempotency.key] = (log.seq, time.monotonic() + idempotency.window)
        self.deliver(Publication(room, log.seq, payload, epoch=log.epoch))
        return log.seq

    async def publish_event(self, room: str, payload: bytes) -> None:
        self.deliver(Publication(room, UNSEQUENCED, payload))

    async def replace_message(self, room: str, seq: int, stored: bytes, replacement: bytes,
                              event: bytes) -> bool | None:
        log = self._log(room)
        at = seq - (log.seq - len(log.messages) + 1)
        if not 0 <= at < len(log.messages):
            return False
        if log.messages[at] != stored:
            return None
        log.messages[at] = replacement
        log.size += len(replacement) - len(stored)
        self.deliver(Publication(room, UNSEQUENCED, event))
        return True

    async def mute(self, room: str, user_id: str, until: float) -> None:
        self._muted.set((room, user_id), until)

    def _sent_in(self, room: str) -> dict[str, tuple[int, float]]:
        """The room's idempotency keys still within their window: the oldest go first (one
        window for all, so the order they were stored in is the order they end in)."""
        sent = self._sent.setdefault(room, {})
        now = time.monotonic()
        while sent and (oldest := next(iter(sent.items())))[1][1] <= now:
            del sent[oldest[0]]
        return sent

    def _keep(self, log: _RoomLog, payload: bytes) -> None:
        """Append, then let the oldest go past either capacity (as the Redis script does)."""
        log.messages.append(payload)
        log.size += len(payload)
        while len(log.messages) > self.capacity or (
                log.size > self.capacity_bytes and len(log.messages) > 1):
            log.size -= len(log.messages.popleft())

    def _spend(self, budgets: Sequence[Budget]) -> None:
        """Take one message from every budget, or from none (raising `BudgetSpent`)."""
        spent = self._budgets.take_all(budgets, time.time())
        if spent is not None:
            raise BudgetSpent(spent)

    def drop_room(self, room: str) -> None:
        """The room expired: its history goes with it."""
        self._logs.pop(room, None)
        self._sent.pop(room, None)

    async def history(self, room: str, limit: int, after: int | None = None,
                      before: int | None = None, max_bytes: int | None = None
                      ) -> HistoryWindow:
        log = self._log(room)
        first = log.seq - len(log.messages) + 1
        low = max(first, (after or 0) + 1)
        high = min(log.seq, log.seq if before is None else before - 1)
        picked: list[bytes] = []
        size = 0
        for seq in range(high, max(low, high - limit + 1) - 1, -1):
            payload = log.messages[seq - first]
            size += len(payload)
            if max_bytes is not None and size > max_bytes and picked:
                break
            picked.append(payload)
        from_seq = high - len(picked) + 1
        return HistoryWindow(picked[::-1], log.seq, log.epoch, first,
                             more=bool(picked) and from_seq > first, parent=log.parent)

    def _log(self, room: str) -> _RoomLog:
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = _RoomLog(0, deque())
        return log

    def deliver(self, publication: Publication) -> None:
        """Hand a publication to the node now, if it is subscribed to its room (presence
        announcements come this way, in the same step as their change)."""
        if self._events is not None and publication.room in self._subscribed:
            self._events.publication(publication)
