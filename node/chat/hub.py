"""This node's connections and rooms, and fan-out of room events to them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection

from node.backends.broker import CONTROL, Broker
from node.backends.envelope import UNSEQUENCED, Publication
from node.backends.presence import Member
from node.chat.protocol import HistoryReset, MessagesLost, encode
from node.chat.resync_gate import ResyncGate
from node.chat.room_counts import RoomCounts
from node.chat.sequencer import Sequencer
from node.chat.session import Session
from node.metrics import Metrics
from node.transport import frames


def _member_id(session: Session) -> str:
    assert session.member is not None, "only authenticated sessions join rooms"
    return session.member.id


class Hub:
    """The truth about local membership: which sessions are in which room here, and so
    which rooms' publications this node wants (the broker's `BrokerEvents`).

    The node is subscribed to a room's broker channel exactly while it has a local member
    in it. Publications pass the sequencer (once each, in seq order), then each is framed
    once and the same bytes go to every local member.
    """

    def __init__(self, broker: Broker, history_capacity: int, metrics: Metrics,
                 presence_limit: int, presence_interval: float) -> None:
        self._broker = broker
        self._metrics = metrics
        self._sequencer = Sequencer(broker, self._fan_out, self._report_fork,
                                    self._report_lost, history_capacity)
        self._reconnect_listeners: list[Callable[[], Awaitable[None]]] = []
        self.sessions: set[Session] = set()
        self._rooms: dict[str, set[Session]] = {}
        self._counts = RoomCounts(presence_limit, presence_interval, self._members)
        self._users: dict[str, Counter[str]] = {}  # room -> member id -> its local sessions
        self._subscribed: set[str] = set()
        # (display name, user id) of names kept for users that dropped, until their grace ends
        self._reserved_names: Counter[tuple[str, str]] = Counter()
        self._subscription_lock = asyncio.Lock()
        self._control: Callable[[bytes], None] | None = None  # carries out control commands
        self._edit_listeners: list[Callable[[str], None]] = []
        self.presence_gate = ResyncGate()  # this node's presence writes, and its resyncs
        self._empty = asyncio.Event()

    def connect(self, session: Session) -> None:
        self.sessions.add(session)

    def disconnect(self, session: Session) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._empty.set()

    async def emptied(self) -> None:
        """Return once this node has no connection left."""
        while self.sessions:
            self._empty.clear()
            await self._empty.wait()

    def held(self) -> list[tuple[str, Member]]:
        """(room, member) of every local session in a room: this node's share of presence."""
        return [(s.room, s.member) for s in self.sessions if s.room and s.member]

    def named(self) -> list[tuple[str, str]]:
        """(display name, user id) of every local session holding its name (anonymous mode),
        and of every name kept for a user that dropped from here."""
        return [(s.member.name, s.member.id) for s in self.sessions
                if s.holds_name and s.member] + list(self._reserved_names.elements())

    def reserve_name(self, name: str, user_id: str) -> None:
        """Keep a dropped session's name among this node's names (see `named`)."""
        self._reserved_names[name, user_id] += 1

    def unreserve_name(self, name: str, user_id: str) -> None:
        self._reserved_names[name, user_id] -= 1
        if self._reserved_names[name, user_id] <= 0:
            del self._reserved_names[name, user_id]

    async def add(self, room: str, session: Session) -> None:
        """Make the session a local member; returns once the room's deliveries flow here."""
        members = self._rooms.setdefault(room, set())
        if session not in members:
            members.add(session)
            self._users.setdefault(room, Counter())[_member_id(session)] += 1
            self._counts.added(room, session)
        await self._sync_subscription(room)

    def joined(self, room: str, session: Session, large: bool) -> None:
        """The session's `room_joined` went out: in a large room it gets the room's count
        from now on, not each change."""
        self._counts.joined(room, session, large)

    def has_member(self, room: str, member_id: str) -> bool:
        """Whether a local session of the member is in the room."""
        return self._users.get(room, Counter())[member_id] > 0

    async def remove(self, room: str, session: Session) -> None:
        members = self._rooms.get(room)
        if members is None or session not in members:
            return
        members.discard(session)
        self._counts.removed(room, session)
        users = self._users[room]
        users[_member_id(session)] -= 1
        if users[_member_id(session)] <= 0:
            del users[_member_id(session)]
        if not members:
            del self._rooms[room], self._users[room]
            self._sequencer.forget(room)
        await self._sync_subscription(room)

    async def _sync_subscription(self, room: str) -> None:
        """Bring the broker subscription in line with local membership, one change at a time."""
        async with self._subscription_lock:
            wanted = room in self._rooms
            if wanted and room not in self._subscribed:
                await self._broker.subscribe(room)
                self._subscribed.add(room)
            elif not wanted and room in self._subscribed:
                self._subscribed.discard(room)
                await self._broker.unsubscribe(room)

    def track(self, room: str, epoch: str, seq: int) -> None:
        """A join read the room's history up to `seq`: delivery goes on from there."""
        self._sequencer.track(room, epoch, seq)

    def seen(self, room: str) -> tuple[str, int]:
        """The epoch and seq of the room's newest message delivered here ("", 0 before)."""
        return self._sequencer.seen(room)

    def position(self, room: str) -> tuple[str, int] | None:
        """(epoch, newest seq) of a room this node delivers with nothing missing, else None."""
        return self._sequencer.position(room)

    def on_edit(self, listener: Callable[[str], None]) -> None:
        """Have `listener` called with a room whose history was edited in place."""
        self._edit_listeners.append(listener)

    def on_reconnect(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Have `listener` called after each broker reconnect (after the gap repairs start)."""
        self._reconnect_listeners.append(listener)

    # --- BrokerEvents ---------------------------------------------------------------------

    def publication(self, publication: Publication) -> None:
        """Every publication of a subscribed room comes here, the moment it arrived, and is
        written to every local member before this returns (unless a gap repair holds it
        back): this call's duration is the fan-out latency."""
        if publication.room == CONTROL and self._control is not None:
            self._control(publication.payload)
        elif publication.room in self._rooms:
            if publication.seq == UNSEQUENCED and not publication.presence:
                for listener in self._edit_listeners:  # an edit of the history (a deletion)
                    listener(publication.room)
            started = time.perf_counter()
            self._sequencer.accept(publication)
            self._metrics.fanout_seconds.observe(time.perf_counter() - started)

    async def reconnected(self) -> None:
        """Fetch what every room said during the outage; then the listeners re-announce
        what shared state may have forgotten."""
        self._metrics.redis_reconnects += 1
        self._sequencer.recover()
        for listener in self._reconnect_listeners:
            await listener()

    def wanted_rooms(self) -> Collection[str]:
        return [*self._rooms, CONTROL] if self._control is not None else self._rooms.keys()

    async def listen_to_control(self, carry_out: Callable[[bytes], None]) -> None:
        """Hand every command of the control channel to `carry_out` (this node's share of a
        cluster-wide command); returns once the broker delivers them."""
        self._control = carry_out
        await self._broker.subscribe(CONTROL)

    # ---------------------------------------------------------------------------------------

    def _members(self, room: str) -> set[Session]:
        return self._rooms.get(room, set())

    def _fan_out(self, publication: Publication) -> None:
        members: Collection[Session] | None = self._rooms.get(publication.room)
        if members and publication.presence:  # a membership change
            members = self._counts.recipients(publication)
        if not members:
            return
        data = frames.frame(frames.OP_TEXT, publication.payload)
        exclude = publication.exclude
        recipients = [s for s in members if s.id != exclude] if exclude else members
        for session in recipients:
            session.deliver(data, publication)
        self._metrics.delivered += len(recipients)

    def _report_lost(self, room: str, first: int, last: int) -> None:
        """Tell the room's members here, in line, which seqs will never come."""
        self._metrics.messages_lost += last - first + 1
        self._fan_out(Publication(room, UNSEQUENCED,
                                  encode(MessagesLost(room=room, first=first, last=last))))

    def _report_fork(self, room: str, epoch: str, base: int) -> None:
        """Tell the room's members here, in line, that its history forked at `base`; what
        they get next is the new epoch's, from `base + 1`."""
        self._metrics.history_forks += 1
        publication = Publication(room, UNSEQUENCED,
                                  encode(HistoryReset(room=room, epoch=epoch, seq=base)),
                                  epoch=epoch)
        data = frames.frame(frames.OP_TEXT, publication.payload)
        for session in self._rooms.get(room, ()):
            session.fork(data, publication)

    @property
    def room_count(self) -> int:
        """Rooms with at least one local member."""
        return len(self._rooms)
