"""Large rooms: their members get the member count, at most once a period, instead of every
membership change.

Announcing each join to every member costs a room of N members about N²/2 frames to fill
(50 million for 10,000), and a member list that long is no use to a client anyway. So a room
lists its members only up to the presence limit. A session that joined a room past it (its
`room_joined` said `large`), or that was in the room when a change took the room past it,
is *counted*: instead of `user_joined` / `user_left` it gets `user_count`, the newest count
and presence version, when one changed, at most once per interval (the first change after a
quiet interval at once). It stays counted until it joins again. The other sessions, the
listed ones, get each change as before while the room stays within the limit.

The limit is decided on the count each change carries, the same number the backend uses to
leave the member list out of a snapshot, so a snapshot and the events after it agree. Every
step is O(1) per change, whatever the room's size; a room with no counted session here
costs nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection

from node.backends.envelope import Publication
from node.chat.protocol import count_update, presence_count
from node.chat.session import Session

Members = Callable[[str], set[Session]]


class RoomCounts:
    """In rooms with counted sessions here: which are counted, which listed, and the count
    update they are owed."""

    def __init__(self, limit: int, interval: float, members: Members) -> None:
        self._limit = limit
        self._interval = interval
        self._members = members  # the room's local sessions (the hub's)
        self._counted: dict[str, set[Session]] = {}
        self._listed: dict[str, set[Session]] = {}  # the rest of those rooms' sessions
        self._owed: dict[str, Publication] = {}  # room -> its newest change not yet counted
        self._last_sent: dict[str, float] = {}  # room -> when its last update went out
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def recipients(self, change: Publication) -> Collection[Session]:
        """The sessions a membership change goes to as itself; the counted ones are owed
        an update. A change past the limit makes every session of the room counted."""
        room = change.room
        counted = self._counted.get(room)
        if presence_count(change.payload) > self._limit:
            if counted is None:
                self._counted[room], self._listed[room] = set(self._members(room)), set()
            else:
                counted |= self._listed[room]
                self._listed[room].clear()
            self._owe(change)
            return ()
        if counted is None:
            return self._members(room)
        self._owe(change)
        return self._listed[room]

    def added(self, room: str, session: Session) -> None:
        """The session joins the room here: listed until its `room_joined` says otherwise."""
        listed = self._listed.get(room)
        if listed is not None:
            listed.add(session)

    def joined(self, room: str, session: Session, large: bool) -> None:
        """The session's `room_joined` said whether the room is large: counted from now on
        if it is, listed (again) if not."""
        counted = self._counted.get(room)
        if not large:
            if counted is not None and session in counted:
                counted.discard(session)
                self._listed[room].add(session)
                if not counted:
                    self._untrack(room)
            return
        if counted is None:
            counted = self._counted[room] = set()
            self._listed[room] = self._members(room) - {session}
        counted.add(session)
        self._listed[room].discard(session)

    def removed(self, room: str, session: Session) -> None:
        """The session left the room here; with the room's last counted session, the room
        needs nothing from here any more."""
        counted = self._counted.get(room)
        if counted is None:
            return
        counted.discard(session)
        self._listed[room].discard(session)
        if not counted:
            self._untrack(room)

    def _untrack(self, room: str) -> None:
        """No session of the room is counted here: every one of them gets each change."""
        del self._counted[room], self._listed[room]
        self._owed.pop(room, None)
        self._last_sent.pop(room, None)
        timer = self._timers.pop(room, None)
        if timer is not None:
            timer.cancel()

    def _owe(self, change: Publication) -> None:
        room = change.room
        owed = self._owed.get(room)
        if owed is None or change.presence > owed.presence:
            self._owed[room] = change
        if room in self._timers:
            return
        due = self._last_sent.get(room, -self._interval) + self._interval
        self._timers[room] = asyncio.get_running_loop().call_later(
            max(0.0, due - time.monotonic()), self._send, room)

    def _send(self, room: str) -> None:
        """Tell the room's counted sessions its newest count."""
        self._timers.pop(room, None)
        change = self._owed.pop(room, None)
        counted = self._counted.get(room)
        if change is None or not counted:
            return
        self._last_sent[room] = time.monotonic()
        update, frame = count_update(change)
        for session in counted:
            session.deliver(frame, update)
