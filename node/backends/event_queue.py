"""The event queue seam: the room events the application's webhooks receive, kept in the
backend until every endpoint has had them.

The backend queues a room's events in the same atomic step that makes them (a message's
publish, a deletion, a membership change), so the queue holds them in the room's order and
none is lost to a node dying between the two. Rooms with events waiting are marked in one of
`PARTITIONS` indexes; a node holding a partition's lease delivers its rooms' events, each
endpoint at its own pace (a cursor per room and endpoint), and events every endpoint has had
are dropped. Nothing above this seam knows how it is done (node.hooks.delivery drives it).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

PARTITIONS = 8  # leases over the rooms: up to this many nodes deliver at once
# Seconds a room stays marked after its last mark: longer than any script that relied on
# the mark may still take to run (a publish runs within its 4 s deadline).
MARK_QUIET = 30.0


def partition_of(room: str) -> int:
    return zlib.crc32(room.encode()) % PARTITIONS


@dataclass(frozen=True, slots=True)
class Recorded:
    """Which events the backend queues (none that no endpoint wants)."""

    messages: bool = False
    deletions: bool = False
    presence: bool = False
    bans: bool = False

    @property
    def any(self) -> bool:
        return self.messages or self.deletions or self.presence or self.bans


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One event in its room's queue: `id` orders it there. `payload` is the event as the
    room's members got it; a replayed dead letter's is its webhook body, with its
    `webhook_id` kept and `only` the one endpoint (key) it is for."""

    id: str
    payload: bytes
    at_ms: int  # when it happened
    webhook_id: str = ""
    only: str = ""


@dataclass(frozen=True, slots=True)
class DeadEvent:
    """A webhook an endpoint never took before it grew too old."""

    id: str  # in the endpoint's dead letters
    room: str
    webhook_id: str
    body: bytes
    at_ms: int
    reason: str


class EventQueue(Protocol):
    async def lease(self, partition: int, ttl: float) -> bool:
        """Hold the partition's delivery for `ttl` seconds (taken, or renewed); False
        while another node holds it."""
        ...

    async def release(self, partition: int) -> None:
        """Let another node deliver the partition now, if this one holds it."""
        ...

    async def rooms(self, partition: int, offset: int, limit: int) -> list[tuple[str, int]]:
        """Rooms of the partition that have (or just had) events waiting, with their mark."""
        ...

    async def cursors(self, rooms: Sequence[str], endpoint: str) -> list[str]:
        """The id of the last event each room delivered to the endpoint ('' for none)."""
        ...

    async def events(self, after: Sequence[tuple[str, str]], limit: int
                     ) -> list[list[QueuedEvent]]:
        """Up to `limit` events after the id given ('' for all) of each room."""
        ...

    async def delivered(self, room: str, endpoint: str, event_id: str) -> None:
        """The endpoint has had every event of the room up to `event_id`."""
        ...

    async def bury(self, room: str, endpoint: str, dead: DeadEvent, keep: int) -> None:
        """Add a webhook to the endpoint's dead letters (keeping the newest `keep`)."""
        ...

    async def settle(self, room: str, endpoints: Sequence[str], unmark: int | None) -> int:
        """Drop the room's events every endpoint has had and, when none is left, take the
        room out of its index if it is still marked `unmark` (None: leave it) and that is
        MARK_QUIET old; returns the events kept."""
        ...

    async def kept(self, rooms: Sequence[str]) -> int:
        """Events the rooms' queues hold (not yet had by every endpoint)."""
        ...

    async def append(self, room: str, payload: bytes) -> None:
        """Queue an event the node itself makes (a ban) in the room's queue."""
        ...

    async def dead(self, endpoint: str, count: int) -> list[DeadEvent]:
        """The endpoint's oldest `count` dead letters."""
        ...

    async def replay(self, endpoint: str, count: int) -> int:
        """Queue the endpoint's oldest `count` dead letters again (for it alone, with their
        webhook ids) and drop them from the dead letters; returns how many."""
        ...
