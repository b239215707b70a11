"""Rooms' newest history, encoded once per room state and shared by every join that wants it.

A join without `since` gets the room's newest window. While the node delivers a room, it
knows the room's state (its epoch and the newest seq delivered: `Hub.position`), and the
newest window of one state never changes: so the window read for one joiner serves every
joiner until the next message, without asking Redis or encoding it again. Before this, a
client re-joining one room in a loop made the node read and encode its history each time
(issue 28: a canary's round trip on the same node went to 0.45-1.0 s).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

import msgspec

from node.backends.broker import HistoryWindow
from node.chat.protocol import history_array


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A history window as replies carry it: one encoded JSON array."""

    history: msgspec.Raw
    more: bool
    epoch: str
    seq: int

    @classmethod
    def of(cls, window: HistoryWindow) -> Snapshot:
        return cls(history_array(window.messages), window.more, window.epoch, window.seq)


class HistorySnapshots:
    """The newest snapshot of each room, least recently used first out past `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()
        self._bytes = 0
        # Edits of a room's history in place (deletions) seen here: a window read before
        # one is not kept, though the room's seq is the same.
        self._edits: Counter[str] = Counter()

    def get(self, room: str, position: tuple[str, int] | None) -> Snapshot | None:
        """The room's snapshot, when it is of the state `position` (epoch, seq) names."""
        snapshot = self._snapshots.get(room)
        if snapshot is None or position != (snapshot.epoch, snapshot.seq):
            return None
        self._snapshots.move_to_end(room)
        return snapshot

    def edits(self, room: str) -> int:
        """How many edits of the room were seen: give it back to `put`."""
        return self._edits[room]

    def edited(self, room: str) -> None:
        """The room's history changed in place: its snapshot goes, and a window being read
        now is not kept."""
        self._edits[room] += 1
        self._drop(room)

    def put(self, room: str, snapshot: Snapshot, edits: int) -> None:
        """Keep `snapshot`, read when the room had seen `edits` edits (unless it saw more
        since: then it may hold a deleted message)."""
        if edits != self._edits[room]:
            return
        self._drop(room)
        size = len(snapshot.history)
        if size > self._max_bytes:
            return
        self._snapshots[room] = snapshot
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._snapshots)))

    def _drop(self, room: str) -> None:
        snapshot = self._snapshots.pop(room, None)
        if snapshot is not None:
            self._bytes -= len(snapshot.history)

    @property
    def size(self) -> int:
        """Bytes of the snapshots kept."""
        return self._bytes
