"""What each client message does: one dispatch table from message type to handler."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from msgspec import UNSET, UnsetType

from node.backends.broker import (
    AlreadyStored, Broker, BudgetSpent, HistoryWindow, Idempotency, Muted,
)
from node.backends.coordination import Coordination
from node.backends.envelope import base_of
from node.backends.errors import OutcomeUnknown, Unavailable
from node.backends.presence import Member, Presence, RoomLimit, RoomPage, Roster
from node.background import Background
from node.chat import disconnect
from node.chat.directory import Directory
from node.chat.heartbeat import now_ms
from node.chat.history_snapshots import HistorySnapshots, Snapshot
from node.chat.hub import Hub
from node.chat.protocol import (
    DEFAULT_NAME, Auth, AuthSuccess, ChatError, ChatMessage, ClientMessage, ErrorCode, History,
    HistoryPage, HistoryReset, Join, Leave, ListRooms, MemberInfo, MessageDeleted, MessageSent,
    Parser, Ping, Pong, Refresh, Refreshed, RoomInfo, RoomJoined, RoomLeft, RoomList,
    SendMessage, ServerPong, event_frame, event_payload, history_array, iso_timestamp,
    checked_name, message_id, message_template, tombstone,
)
from node.chat.session import Session
from node.hooks.application import Admitted, ApplicationHooks, HookUnavailable, Rejected
from node.hooks.wire import ConnectCheck, MessageCheck
from node.identity.jwt_tokens import Claims, JwtVerifier, TokenRefused
from node.identity.names import canonical
from node.identity.resume_tokens import sign, verify
from node.metrics import Metrics
from node.ratelimit import Budget, per_second
from node.transport.admission import Admission

log = logging.getLogger("node.chat.handlers")
RESERVED_FORMS = frozenset(canonical(DEFAULT_NAME))  # the shared name of nameless users
DELETE_ATTEMPTS = 3  # reads and conditional writes of a message being deleted


@dataclass(frozen=True, slots=True)
class _Route:
    handle: Callable[[Session, Any], Awaitable[None]]
    requires_auth: bool


@dataclass(frozen=True, slots=True)
class ChatLimits:
    """The part of the node's settings the handlers use."""

    node_id: str
    history: int  # messages a room keeps
    history_window: int  # newest messages sent to a joiner, most one history reply holds
    history_reply_bytes: int  # bytes of messages one reply carries at most
    history_cache_bytes: int  # bytes of rooms' newest history kept to answer joins
    presence_grace: float  # seconds a dropped user stays present (and keeps its name)
    user_budget: tuple[float, int]  # one user's messages per second, and burst
    address_budget: tuple[float, int]  # one client address's messages per second, and burst
    identities_per_minute: int  # fresh anonymous users one address may start
    max_text: int  # characters of one message
    client_id_window: float  # seconds a clientId keeps a resend from being stored again


@dataclass(frozen=True, slots=True)
class Author:
    """Who a message is from: a member, or (`system`) the application itself."""

    user_id: str
    name: str
    system: bool = False


def room_list(page: RoomPage, offset: int) -> RoomList:
    """A page of the directory as the client sees it."""
    return RoomList(rooms=[RoomInfo(name=r.name, user_count=r.user_count) for r in page.rooms],
                    total=page.total, next=page.next_offset(offset))


def _member(session: Session) -> Member:
    assert session.member is not None, "routes that need a member require auth"
    return session.member


def _joined_room(join: Join) -> str:
    assert join.room is not None, "the parser validated the room"
    return join.room


def _room(session: Session) -> str:
    if session.room is None:
        raise ChatError(ErrorCode.NOT_IN_ROOM, "Join a room first")
    return session.room


class Handlers:
    """The chat behaviour of a node, above the hub, the broker and presence."""

    def __init__(self, limits: ChatLimits, jwt: JwtVerifier | None, hub: Hub, broker: Broker,
                 presence: Presence, coordination: Coordination, directory: Directory,
                 metrics: Metrics, admission: Admission, hooks: ApplicationHooks) -> None:
        self._node_id = limits.node_id
        self._hooks = hooks
        self._metrics = metrics
        self._jwt = jwt  # None: anonymous mode (names, no tokens)
        self._history_window = min(limits.history_window, limits.history)
        self._history_capacity = limits.history
        self._reply_bytes = limits.history_reply_bytes
        self._snapshots = HistorySnapshots(limits.history_cache_bytes)
        hub.on_edit(self._snapshots.edited)  # a deletion changes a room's history in place
        self._hub = hub
        self._broker = broker
        self._presence = presence
        self._coordination = coordination
        self._admission = admission
        self._directory = directory
        self._presence_grace = limits.presence_grace
        self._user_budget = limits.user_budget
        self._address_budget = limits.address_budget
        # Fresh anonymous identities one address may make a minute: each would reset every
        # per-user allowance.
        self._identities_per_minute = limits.identities_per_minute
        self._departing = Background()
        self._stopping = asyncio.Event()  # set when the node leaves: see _release_after_grace
        self._parser = Parser(limits.max_text)  # one per node: it holds no per-client state
        self._client_id_window = limits.client_id_window
        self._routes: dict[type[ClientMessage], _Route] = {
            Auth: _Route(self._auth, requires_auth=False),
            Refresh: _Route(self._refresh, requires_auth=True),
            Join: _Route(self._join, requires_auth=True),
            Leave: _Route(self._leave, requires_auth=True),
            History: _Route(self._history, requires_auth=True),
            SendMessage: _Route(self._message, requires_auth=True),
            ListRooms: _Route(self._list_rooms, requires_auth=False),
            Ping: _Route(self._ping, requires_auth=False),
            Pong: _Route(self._pong, requires_auth=False),
        }

    async def dispatch(self, session: Session, text: str) -> None:
        """Parse one client frame and do what it asks; raises `ChatError` to answer an error."""
        message = self._parser.parse(text)
        route = self._routes[type(message)]
        if route.requires_auth and session.member is None:
            raise ChatError(ErrorCode.NOT_AUTHENTICATED, "Authenticate first")
        try:
            await route.handle(session, message)
        except Unavailable as exc:
            log.warning("session=%s %s failed: %s", session.id, type(message).__name__, exc)
            raise ChatError(
                ErrorCode.UNAVAILABLE, "Chat state is unreachable; nothing was done, retry soon"
            ) from exc

    async def disconnect(self, session: Session) -> None:
        """The connection is gone: leave its room so that the others are told.

        A drained user stays in presence for the grace period: when it resumes on another
        node meanwhile, nobody sees it leave and come back. Any user's name stays its own
        for the grace period, however it left: whoever watches for `user_left` cannot take
        the name before its owner's resume gets it back (but see `_release_after_grace`).
        """
        member, room = session.member, session.room
        if member is not None and session.holds_name:
            session.holds_name = False  # out of the node's sessions' names from now
            if self._presence_grace > 0:
                self._hub.reserve_name(member.name, member.id)
                self._departing.spawn(self._release_after_grace(member, session.drained),
                                     "departure")
            else:
                await self._release_name(canonical(member.name))
        if member is None or room is None:
            return
        if session.drained and self._presence_grace > 0:
            await self._leave_locally(session)
            self._departing.spawn(self._leave_after_grace(room, member), "departure")
        else:
            await self._leave_room(session, member)

    async def _release_after_grace(self, member: Member, drained: bool) -> None:
        """Let the name go when the grace ends; the user's own connections made meanwhile
        hold it on by themselves (a name's holds are counted per connection). A node that
        leaves keeps the names of the users it drained (they come back elsewhere within the
        grace) and lets the others go at once instead of stopping a grace later."""
        if drained:
            await asyncio.sleep(self._presence_grace)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._presence_grace)
        try:
            await self._release_name(canonical(member.name))
        finally:  # released first: a resync meanwhile still writes the hold
            self._hub.unreserve_name(member.name, member.id)

    async def _release_name(self, forms: tuple[str, ...]) -> None:
        try:
            async with self._hub.presence_gate.write():
                await self._presence.release_name(forms)
        except Unavailable as exc:  # the next resync writes the node's names afresh
            log.warning("name not released: %s", exc)

    async def departures(self) -> None:
        """The node leaves: wait for the presence and names held for drained users to be
        let go (the others' names go now)."""
        self._stopping.set()
        while self._departing:
            await asyncio.gather(*self._departing, return_exceptions=True)

    async def _leave_after_grace(self, room: str, member: Member) -> None:
        await asyncio.sleep(self._presence_grace)
        await self._forget(room, member)

    async def _auth(self, session: Session, message: Auth) -> None:
        if session.member is not None:
            raise ChatError(ErrorCode.ALREADY_AUTHENTICATED, "Already authenticated")
        if self._jwt is not None:
            return await self._auth_by_token(session, message)
        secret = await self._coordination.secret()
        user_id = message.user_id or str(uuid.uuid4())
        if message.user_id is not None and not verify(secret, user_id, message.token or ""):
            raise ChatError(ErrorCode.INVALID_TOKEN, "userId and token do not match")
        if message.user_id is None and not await self._coordination.take(
                Budget("identities", session.address, self._identities_per_minute, 60.0)):
            raise ChatError(ErrorCode.RATE_LIMITED, "Too many new users from your network; "
                            "resume with your userId and token, or retry in a minute")
        admitted = await self._admitted(session, message)
        user_id = admitted.user_id or user_id
        await self._refuse_banned(user_id)
        name = admitted.name or message.name or DEFAULT_NAME
        if name != DEFAULT_NAME:
            await self._claim_name(session, name, user_id)
        session.member = Member(user_id, name)
        if admitted.rooms is not None:  # the application's word, as a token's `rooms`
            session.claims = Claims(user_id, name, math.inf, admitted.rooms)
        log.info("auth session=%s user=%s", session.id, user_id)
        session.send(event_frame(AuthSuccess(
            user_id=user_id, name=name, node=self._node_id, token=sign(secret, user_id)
        )))

    async def _admitted(self, session: Session, message: Auth) -> Admitted:
        """The connect hook's word on this `auth`: who the client is and where it may go
        (docs/hooks.md); a refusal closes the connection (4001)."""
        if not self._hooks.checks_connects:
            return Admitted(None, None, None)
        resumed = message.user_id is not None
        try:
            admitted = await self._hooks.check_connect(ConnectCheck(
                session.address, message.user_id, message.name,
                None if resumed else message.token))
        except Rejected as refused:
            raise ChatError(refused.code, refused.reason or "The application refused you",
                            close=disconnect.AUTH_FAILED) from None
        except HookUnavailable:
            raise ChatError(ErrorCode.UNAVAILABLE, "The application could not be asked "
                            "whether you may come in; retry soon") from None
        if admitted.name is None:
            return admitted
        try:  # the name as the rules make it (trimmed, composed), as a client's would be
            return dataclasses.replace(admitted, name=checked_name(admitted.name))
        except ChatError:
            log.warning("the connect hook gave a name the rules refuse: %r", admitted.name)
            raise ChatError(ErrorCode.UNAVAILABLE, "The application gave you a name "
                            "the chat cannot use") from None

    async def _refuse_banned(self, user_id: str) -> None:
        """A user the application banned (server API `disconnect` with `until`) is refused
        and closed (4003) on every node until its ban ends."""
        if ends := await self._ban_ends(user_id):
            raise ChatError(ErrorCode.BANNED, f"Banned until {ends}", close=disconnect.BANNED)

    async def _refuse_barred(self, room: str, user_id: str) -> None:
        """A user the application kicked out of a room until a time (server API `kick`)
        may not join it again before then, on any node."""
        if ends := await self._ban_ends(user_id, room):
            raise ChatError(ErrorCode.KICKED, f"You were removed from {room!r} until {ends}")

    async def _ban_ends(self, user_id: str, room: str = "") -> str | None:
        """When the user's ban from the cluster (or `room`) ends, in ISO 8601; None: none."""
        until = await self._coordination.banned_until(user_id, room)
        return None if until is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))

    async def _claim_name(self, session: Session, name: str, user_id: str) -> None:
        """Hold the name, and every name that looks like it, for this user while it is
        connected anywhere in the cluster."""
        forms = canonical(name)
        if RESERVED_FORMS.intersection(forms):
            raise ChatError(ErrorCode.NAME_TAKEN, f"{DEFAULT_NAME!r} is the name of users "
                            "without one; choose another")
        async with self._hub.presence_gate.write():
            holder = await self._presence.claim_name(forms, user_id)
        if holder is not None:
            raise ChatError(ErrorCode.NAME_TAKEN,
                            f"{name!r}, or a name that looks like it, is in use; choose another")
        session.holds_name = True

    async def _auth_by_token(self, session: Session, message: Auth) -> None:
        claims = self._verified(message.token)
        await self._refuse_banned(claims.user_id)
        session.member = Member(claims.user_id, claims.name)
        self._authorize(session, claims)
        log.info("auth session=%s user=%s (token)", session.id, claims.user_id)
        session.send(event_frame(AuthSuccess(user_id=claims.user_id, name=claims.name,
                                             node=self._node_id, exp=int(claims.expires))))

    def _verified(self, token: str | None) -> Claims:
        """The claims of the client's token; any failure ends the connection (4001)."""
        assert self._jwt is not None
        if token is None:
            raise ChatError(ErrorCode.AUTH_FAILED, "This server needs a token",
                            close=disconnect.AUTH_FAILED)
        try:
            return self._jwt.verify(token)
        except TokenRefused as refused:
            raise ChatError(ErrorCode.AUTH_FAILED, str(refused),
                            close=disconnect.AUTH_FAILED) from None

    def _authorize(self, session: Session, claims: Claims) -> None:
        """The session acts on these claims, and ends when they expire."""
        session.claims = claims
        session.expire_at(claims.expires, disconnect.TOKEN_EXPIRED)

    async def _refresh(self, session: Session, message: Refresh) -> None:
        if self._jwt is None:
            raise ChatError(ErrorCode.INVALID_FORMAT, "refresh is for servers that use tokens")
        claims = self._verified(message.token)
        if claims.user_id != _member(session).id:
            raise ChatError(ErrorCode.AUTH_FAILED, "The new token is for another user",
                            close=disconnect.AUTH_FAILED)
        self._authorize(session, claims)
        session.send(event_frame(Refreshed(exp=int(claims.expires))))
        if session.room is not None and not claims.may_join(session.room):
            room = session.room
            await self._leave_room(session, _member(session))
            session.send(event_frame(RoomLeft(room=room)))
            raise ChatError(ErrorCode.FORBIDDEN, f"The new token does not allow room {room!r}")

    async def _join(self, session: Session, message: Join) -> None:
        member, room = _member(session), _joined_room(message)
        session.check_join()
        if session.claims is not None and not session.claims.may_join(room):
            raise ChatError(ErrorCode.FORBIDDEN, f"Your token does not allow room {room!r}")
        await self._refuse_barred(room, member.id)
        if session.room == room:  # a fresh snapshot and the messages after `since`
            session.hold()
            try:
                roster = await self._presence.roster(room)
            except Unavailable:
                session.release(0, 0)
                raise
            return await self._welcome(session, message, roster)
        if session.room is not None:
            await self._leave_room(session, member)
        session.room = room
        session.hold()  # the room's events wait until room_joined has gone out
        try:
            await self._hub.add(room, session)  # subscribed before the snapshot is taken
            async with self._hub.presence_gate.write():
                joined = await self._presence.join(room, member, exclude=session.id,
                                                   address=session.address)
        except (Unavailable, RoomLimit) as refused:
            session.room = None
            session.release(0, 0)
            await self._hub.remove(room, session)
            if isinstance(refused, RoomLimit):
                raise ChatError(ErrorCode.ROOM_LIMIT, str(refused)) from None
            raise
        await self._welcome(session, message, joined.roster)
        self._metrics.joins += 1
        log.info("join session=%s room=%s", session.id, room)

    async def _welcome(self, session: Session, join: Join, roster: Roster) -> None:
        """Send `room_joined`, then whatever the room said after its history was read and
        its roster taken."""
        seen, epoch = 0, ""
        room = _joined_room(join)
        try:
            snapshot, recovered = await self._history_for(session, join)
            members = roster.members
            session.send(event_frame(RoomJoined(
                room=room,
                history=snapshot.history,
                more=snapshot.more,
                users=[m.name for m in members],
                members=[MemberInfo(user_id=m.id, name=m.name) for m in members],
                user_count=roster.count,
                seq=snapshot.seq,
                epoch=snapshot.epoch,
                presence=roster.version,
                recovered=recovered,
                large=True if roster.large else UNSET,
            )))
            seen, epoch = snapshot.seq, snapshot.epoch
            self._hub.track(room, snapshot.epoch, snapshot.seq)
            self._hub.joined(room, session, roster.large)
            self._admission.finished(session)  # its handshake is done
        finally:
            session.release(seen, roster.version, epoch, counted=roster.large)

    async def _history_for(self, session: Session, join: Join
                           ) -> tuple[Snapshot, bool | UnsetType]:
        """Everything after `since` when the room still keeps it (as much of it as a reply
        carries, the newest first), else the newest window. A resume from before a fork (a
        failover) goes on in the new epoch from the fork's base, once the session was told,
        as the room's members were, that the history was reset there."""
        room = _joined_room(join)
        if join.since is None:
            return await self._newest(room), UNSET
        since = join.since
        resumed = await self._after(room, since)
        if resumed.forked_from(join.epoch):
            base = base_of(resumed.epoch)
            session.send(event_frame(HistoryReset(room=room, epoch=resumed.epoch, seq=base)))
            if since > base:
                since = base
                resumed = await self._after(room, since)
        if resumed.covers(since, join.epoch):
            return Snapshot.of(resumed), True
        return await self._newest(room), False

    async def _after(self, room: str, since: int) -> HistoryWindow:
        return await self._broker.history(room, self._history_capacity, after=since,
                                          max_bytes=self._reply_bytes)

    async def _newest(self, room: str) -> Snapshot:
        """The room's newest window: the shared snapshot of its state, or read and kept."""
        snapshot = self._snapshots.get(room, self._hub.position(room))
        if snapshot is None:
            edits = self._snapshots.edits(room)
            snapshot = Snapshot.of(await self._broker.history(
                room, self._history_window, max_bytes=self._reply_bytes))
            self._snapshots.put(room, snapshot, edits)
            self._metrics.history_reads += 1
        return snapshot

    async def _history(self, session: Session, message: History) -> None:
        """Older messages of the client's room, as bounded as a join's."""
        room = _room(session)
        session.check_join("history requests")
        window = await self._broker.history(
            room, min(message.limit or self._history_window, self._history_capacity),
            before=message.before, max_bytes=self._reply_bytes)
        session.send(event_frame(HistoryPage(room=room, epoch=window.epoch,
                                             messages=history_array(window.messages),
                                             more=window.more)))

    async def _leave(self, session: Session, message: Leave) -> None:
        room = _room(session)
        await self._leave_room(session, _member(session))
        session.send(event_frame(RoomLeft(room=room)))

    async def kick(self, session: Session, room: str) -> None:
        """Take the session out of `room` (the application's `kick`): it leaves as if it had
        asked, and is told why."""
        if session.room == room and session.member is not None:
            await self._leave_room(session, session.member)
            session.send(event_frame(RoomLeft(room=room, reason=ErrorCode.KICKED.value)))

    async def _leave_room(self, session: Session, member: Member) -> None:
        await self._forget(await self._leave_locally(session), member)

    async def _leave_locally(self, session: Session) -> str:
        room = _room(session)
        session.room = None
        await self._hub.remove(room, session)
        log.info("leave session=%s room=%s", session.id, room)
        return room

    async def _forget(self, room: str, member: Member) -> None:
        """Remove from presence (which tells the room), unless another connection of the
        member is still in it here; an update lost to an outage is repaired on reconnect,
        and a member that another node holds (it moved, or has a tab there) did not leave."""
        if self._hub.has_member(room, member.id):
            return
        try:
            async with self._hub.presence_gate.write():
                await self._presence.leave(room, member)
        except Unavailable as exc:
            log.warning("%s left %s unannounced: %s", member.id, room, exc)

    async def _message(self, session: Session, message: SendMessage) -> None:
        started = time.perf_counter()
        self._metrics.received += 1
        member, room = _member(session), _room(session)
        assert message.text is not None, "the parser validated the text"
        if not session.budgets:  # made at the first message: most sessions stay idle
            session.budgets = (per_second("user", member.id, *self._user_budget),
                               per_second("address", session.address, *self._address_budget))
        text = message.text
        if self._hooks.checks_messages:
            text = await self._hooked_text(MessageCheck(room, member.id, member.name, text,
                                                        message.client_id))
        try:
            seq, duplicate = await self.publish(room, Author(member.id, member.name),
                                                text, message.client_id, session.budgets)
        except BudgetSpent as spent:
            raise ChatError(ErrorCode.RATE_LIMITED,
                            f"Too many messages from this {spent.budget.kind}; this one was "
                            "dropped") from None
        except Muted:
            raise ChatError(ErrorCode.MUTED, "You are muted in this room: your messages are "
                            "not delivered (you still read)") from None
        except OutcomeUnknown as unknown:
            log.warning("session=%s publish outcome unknown: %s", session.id, unknown)
            raise ChatError(ErrorCode.UNKNOWN_OUTCOME, "No answer from the chat state: the "
                            "message may have been stored. Send it again with the same "
                            "clientId (stored once)") from None
        if message.client_id is not None:  # without one, the echo is the acknowledgement
            session.send(event_frame(MessageSent(
                room=room, seq=seq, client_id=message.client_id, duplicate=duplicate or UNSET)))
        if not duplicate:
            self._metrics.published += 1
            self._metrics.publish_seconds.observe(time.perf_counter() - started)

    async def _hooked_text(self, check: MessageCheck) -> str:
        """The text the publish hook lets through (maybe its replacement), or the client's
        `error`: the application's code when it rejected the message, `unavailable` when
        the hook failed under the reject policy."""
        try:
            text = await self._hooks.check_message(check)
        except Rejected as refused:
            raise ChatError(refused.code, refused.reason or "The application rejected your "
                            "message; it was not sent") from None
        except HookUnavailable:
            raise ChatError(ErrorCode.UNAVAILABLE, "The application could not check your "
                            "message; it was not sent, retry soon") from None
        try:
            self._parser.check_text(text)
        except ChatError:
            log.warning("the publish hook's replacement breaks the text rules; refused")
            raise ChatError(ErrorCode.UNAVAILABLE, "The application's replacement of your "
                            "message cannot be sent; it was not sent") from None
        return text

    async def publish(self, room: str, author: Author, text: str, client_id: str | None,
                      budgets: Sequence[Budget] = ()) -> tuple[int, bool]:
        """Store and publish one message the way every message goes (the room's seq, its
        history, the fan-out through the broker, in the room's one order): a member's, or
        one the application posts through the server API. Returns its seq, and whether it
        was stored before under the same `client_id` (then nothing was done)."""
        template = message_template(ChatMessage(
            room=room, user=author.name, user_id=author.user_id, text=text,
            timestamp=iso_timestamp(), id=message_id(),
            client_id=UNSET if client_id is None else client_id,
            system=True if author.system else UNSET))
        seen_epoch, seen = self._hub.seen(room)
        try:
            return await self._broker.publish_message(
                room, template, budgets, seen, seen_epoch,
                self._idempotency(author.user_id, client_id), author.user_id), False
        except AlreadyStored as stored:
            return stored.seq, True

    async def delete(self, room: str, seq: int) -> bool:
        """Put a tombstone in the place of message `seq` of the room's history and tell the
        room's members (`message_deleted`, in the room's order); False when the history
        holds no such message. Deleting a tombstone again changes nothing."""
        for _ in range(DELETE_ATTEMPTS):  # another edit between the read and the write
            window = await self._broker.history(room, 1, after=seq - 1, before=seq + 1)
            if not window.messages:
                return False
            stored = window.messages[0]
            if (replacement := tombstone(stored)) is None:
                return True  # deleted before
            replaced = await self._broker.replace_message(
                room, seq, stored, replacement, event_payload(MessageDeleted(room=room, seq=seq)))
            if replaced is not None:
                return replaced
        raise Unavailable(f"message {seq} of {room} kept changing")

    def _idempotency(self, user_id: str, client_id: str | None) -> Idempotency | None:
        """The key of a message its sender named: the user's (length-prefixed, so that no
        two users' keys meet) and its clientId."""
        if client_id is None:
            return None
        return Idempotency(f"{len(user_id)}:{user_id}:{client_id}", self._client_id_window)

    async def _list_rooms(self, session: Session, message: ListRooms) -> None:
        page = await self._directory.page(message.offset, message.limit)
        session.send(event_frame(room_list(page, message.offset)))

    async def _ping(self, session: Session, message: Ping) -> None:
        session.send(event_frame(ServerPong(timestamp=now_ms())))

    async def _pong(self, session: Session, message: Pong) -> None:
        session.last_pong = time.monotonic()
