"""Per-room delivery order on this node: each message once, in seq order, gaps repaired.

Every envelope carries its room seq. A duplicate (seq already delivered) is dropped; a gap
(a message lost while the subscriber reconnected, or a lost publish) is filled from history
before anything newer is delivered. What history no longer holds (the room said more than it
keeps while this node was cut off) is reported in line, where it would have been: the
members are told which seqs will never come, never left to find a silent jump. A message of
another epoch than the one delivered so far means the history forked (a failover): the
members are told in line, delivery goes back to the fork's base and goes on in the new
epoch, whose messages after the base they may not have (two primaries can number different
messages alike). Presence events (unsequenced) keep their place in line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from node.backends.broker import Broker, HistoryWindow
from node.backends.envelope import UNSEQUENCED, Publication, base_of
from node.backends.errors import Unavailable
from node.background import Background, report_failure
from node.backoff import Backoff

log = logging.getLogger("node.chat.sequencer")

# A gap repair whose history read fails (other than Redis being unavailable, which is
# reported at once) tries this many times, backing off from REPAIR_BACKOFF seconds, while the
# room's new messages wait; then it releases them with the gap reported.
REPAIR_ATTEMPTS = 3
REPAIR_BACKOFF = 0.2

Emit = Callable[[Publication], None]
Fork = Callable[[str, str, int], None]  # room, the new epoch, its base
Lost = Callable[[str, int, int], None]  # room, first and last seq that will never come


@dataclass(slots=True)
class _Cursor:
    """How far a room has been delivered here, in which incarnation of its history."""

    epoch: str | None = None
    seq: int | None = None
    queued: list[Publication] | None = None  # while a repair runs, arrivals wait here
    left: set[str] = field(default_factory=set)  # epochs forked away from: late arrivals


class Sequencer:
    def __init__(self, broker: Broker, emit: Emit, fork: Fork, lost: Lost,
                 capacity: int) -> None:
        self._broker = broker
        self._emit = emit
        self._fork = fork  # told, in line, that a room's history forked
        self._lost = lost  # told, in line, of seqs that will never be delivered
        self._capacity = capacity
        self._cursors: dict[str, _Cursor] = {}
        self._repairs = Background()

    def accept(self, publication: Publication) -> None:
        """Deliver now, drop as a duplicate, or hold back behind a gap repair."""
        cursor = self._cursor(publication.room)
        seq = publication.seq
        if cursor.queued is not None:
            cursor.queued.append(publication)
        elif seq == UNSEQUENCED:
            self._emit(publication)
        elif cursor.epoch is not None and publication.epoch not in ("", cursor.epoch):
            if publication.epoch not in cursor.left:
                self._switch(publication.room, cursor, publication.epoch)
                self.accept(publication)  # in the new epoch now: delivered, or a gap
        elif cursor.seq is None or seq == cursor.seq + 1:
            cursor.seq = seq
            cursor.epoch = cursor.epoch or publication.epoch or None
            self._emit(publication)
        elif seq > cursor.seq:
            cursor.queued = [publication]
            self._start_repair(publication.room, cursor)

    def track(self, room: str, epoch: str, seq: int) -> None:
        """A join read the room's history: where the room stood, if nothing came yet."""
        cursor = self._cursor(room)
        cursor.epoch = cursor.epoch or epoch
        if cursor.seq is None:
            cursor.seq = seq

    def seen(self, room: str) -> tuple[str, int]:
        """(epoch, seq) of the newest message delivered here; ("", 0) before any."""
        cursor = self._cursors.get(room)
        if cursor is None:
            return "", 0
        return cursor.epoch or "", cursor.seq or 0

    def position(self, room: str) -> tuple[str, int] | None:
        """(epoch, seq) of a room delivered in order up to seq, with no repair running."""
        cursor = self._cursors.get(room)
        if cursor is None or cursor.epoch is None or cursor.seq is None \
                or cursor.queued is not None:
            return None
        return cursor.epoch, cursor.seq

    def _cursor(self, room: str) -> _Cursor:
        """The room's cursor; created on first use only (this is the fan-out path)."""
        cursor = self._cursors.get(room)
        if cursor is None:
            cursor = self._cursors[room] = _Cursor()
        return cursor

    def forget(self, room: str) -> None:
        """The room has no local member any more."""
        self._cursors.pop(room, None)

    def recover(self) -> None:
        """After a broker reconnect: fetch whatever every room said while we were away."""
        for room, cursor in self._cursors.items():
            if cursor.seq is not None and cursor.queued is None:
                cursor.queued = []
                self._start_repair(room, cursor)

    async def idle(self) -> None:
        """Wait until no repair is running."""
        while self._repairs:
            await asyncio.gather(*self._repairs)

    def _start_repair(self, room: str, cursor: _Cursor) -> None:
        self._repairs.spawn(self._repair(room, cursor), "gap repair")

    async def _repair(self, room: str, cursor: _Cursor) -> None:
        """Fill the room's gap from history, retrying a failed attempt with backoff; the room
        is always released: what waited is delivered, a gap no attempt filled reported."""
        backoff = Backoff(base=REPAIR_BACKOFF)
        try:
            for attempt in range(REPAIR_ATTEMPTS):
                try:
                    await self._fill_from_history(room, cursor)
                    return
                except Exception as error:  # a bug below must not hold the room's messages
                    report_failure("gap repair", error)
                    if attempt + 1 < REPAIR_ATTEMPTS:
                        await asyncio.sleep(backoff.next_delay())
        finally:
            if self._cursors.get(room) is cursor:
                self._replay(room, cursor)

    async def _fill_from_history(self, room: str, cursor: _Cursor) -> None:
        assert cursor.seq is not None
        window = await self._fetch(room, cursor.seq)
        if window is not None and cursor.epoch not in (None, window.epoch):
            delivered = cursor.seq
            self._switch(room, cursor, window.epoch)
            if cursor.seq < delivered:
                window = await self._fetch(room, cursor.seq)
        if self._cursors.get(room) is not cursor:
            return  # the room emptied meanwhile
        if window is not None:
            cursor.epoch = window.epoch
            self._fill(room, cursor, window.messages, window.seq - len(window.messages) + 1)

    def _switch(self, room: str, cursor: _Cursor, epoch: str) -> None:
        """The room's history forked into `epoch`: tell the members in line, and go back to
        its base, the last seq both histories share."""
        base = base_of(epoch)
        log.warning("history of %s forked at seq %d into epoch %s; delivered up to %s",
                    room, base, epoch, cursor.seq)
        self._fork(room, epoch, base)
        if cursor.epoch is not None:
            cursor.left.add(cursor.epoch)
        cursor.epoch = epoch
        if cursor.seq is not None and base < cursor.seq:
            cursor.seq = base

    async def _fetch(self, room: str, after: int) -> HistoryWindow | None:
        try:
            return await self._broker.history(room, self._capacity, after=after)
        except Unavailable as exc:
            log.warning("cannot repair %s after seq %d: %s", room, after, exc)
            return None

    def _fill(self, room: str, cursor: _Cursor, messages: list[bytes], first: int) -> None:
        """Deliver stored messages after the cursor, up to the first one waiting in line;
        seqs that history no longer holds are reported where they would have been."""
        assert cursor.seq is not None and cursor.queued is not None
        waiting = [p.seq for p in cursor.queued if p.seq != UNSEQUENCED]
        until = waiting[0] if waiting else first + len(messages)
        for offset, payload in enumerate(messages):
            seq = first + offset
            if cursor.seq < seq < until:
                self._report_gap(room, cursor, seq)
                cursor.seq = seq
                self._emit(Publication(room, seq, payload))

    def _report_gap(self, room: str, cursor: _Cursor, following: int) -> None:
        """`following` is the next seq to deliver: report the seqs before it that will never
        come, and move the cursor past them."""
        assert cursor.seq is not None
        if following > cursor.seq + 1:
            log.warning("%s: seqs %d..%d are lost", room, cursor.seq + 1, following - 1)
            self._lost(room, cursor.seq + 1, following - 1)
            cursor.seq = following - 1

    def _replay(self, room: str, cursor: _Cursor) -> None:
        """Deliver what waited; a gap history could not fill is reported, once."""
        queued, cursor.queued = cursor.queued or [], None
        sequenced = [p.seq for p in queued if p.seq != UNSEQUENCED]
        if sequenced and cursor.seq is not None and sequenced[0] > cursor.seq + 1:
            self._report_gap(room, cursor, sequenced[0])
        for publication in queued:
            self.accept(publication)
