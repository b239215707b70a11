"""The client wire format: typed incoming messages, validated at the edge, and outgoing events.

Incoming JSON frames are parsed once into frozen structs; every protocol error comes from
`Parser.parse`. Outgoing events are encoded once and framed once (`frame`), so a broadcast
is the same bytes for every recipient.
"""

from __future__ import annotations

import enum
import functools
import random
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, cast

import msgspec

from node.backends.envelope import UNSEQUENCED, Publication, Template
from node.chat.disconnect import Disconnect
from node.identity import rules
from node.transport import frames


class ErrorCode(enum.StrEnum):
    """Machine-readable codes of `error` events."""

    INVALID_FORMAT = "invalid_format"
    UNKNOWN_TYPE = "unknown_type"
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    NOT_IN_ROOM = "not_in_room"
    INVALID_NAME = "invalid_name"
    INVALID_ROOM = "invalid_room"
    TEXT_REQUIRED = "text_required"
    TEXT_TOO_LONG = "text_too_long"
    INVALID_TEXT = "invalid_text"
    RATE_LIMITED = "rate_limited"
    INVALID_TOKEN = "invalid_token"
    UNAVAILABLE = "unavailable"
    UNKNOWN_OUTCOME = "unknown_outcome"
    ROOM_LIMIT = "room_limit"
    AUTH_FAILED = "auth_failed"
    FORBIDDEN = "forbidden"
    NAME_TAKEN = "name_taken"
    MUTED = "muted"
    BANNED = "banned"
    KICKED = "kicked"


class ChatError(Exception):
    """A request the server refuses; the client gets an `error` event and stays connected,
    unless `close` says how the server then closes the connection."""

    def __init__(self, code: ErrorCode | str, message: str, close: Disconnect | None = None
                 ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close


# --- client -> server ------------------------------------------------------------------


class _Incoming(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=False):
    pass


class Auth(_Incoming, frozen=True, tag="auth"):
    """Anonymous mode: `name`, and `userId` + `token` (from an earlier `auth_success`) to
    resume that identity. JWT mode: `token` is the identity provider's JWT."""

    name: str | None = None
    user_id: str | None = msgspec.field(default=None, name="userId")
    token: str | None = None


class Refresh(_Incoming, frozen=True, tag="refresh"):
    """JWT mode: a new token for the same user, before the current one expires."""

    token: str | None = None


class Join(_Incoming, frozen=True, tag="join"):
    """`since`/`epoch`: resume after the last seq seen in that incarnation of the room."""

    room: str | None = None
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None
    epoch: str | None = None


class Leave(_Incoming, frozen=True, tag="leave"):
    pass


class History(_Incoming, frozen=True, tag="history"):
    """Older messages of the room the client is in: up to `limit` of those below seq
    `before`, the newest of them first when a reply's byte bound cuts."""

    before: Annotated[int, msgspec.Meta(ge=1)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None


# A client's idempotency key: printable ASCII, so that its bytes are bounded with its length.
ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[!-~]+$")]


class SendMessage(_Incoming, frozen=True, tag="message"):
    """`clientId`: the sender's own key for this message. Sent again by the same user
    within the window (after a reconnect, on any node), it is stored and delivered once:
    the resend is answered with the first one's seq. The message event carries it."""

    text: str | None = None
    client_id: ClientId | None = msgspec.field(default=None, name="clientId")


MAX_PAGE = 100
# Control characters (Unicode Cc) but tab and newline: invisible, and JSON writes each as six
# bytes (\u0001), so a text of them would be six times its size in every frame and in Redis.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Past any directory a cluster can hold (--max-rooms); bounded so that no backend is asked
# for an index it cannot represent (Redis answers an error past 2**63).
MAX_OFFSET = 2**31 - 1
# Input quoted back in an error is cut to this many characters.
MAX_QUOTED = 32


def quoted(text: str) -> str:
    """`text` as an error may quote it: its first MAX_QUOTED characters, repr'd."""
    return repr(text[:MAX_QUOTED]) + ("..." if len(text) > MAX_QUOTED else "")


class ListRooms(_Incoming, frozen=True, tag="list_rooms"):
    """A page of the room directory, in name order."""

    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = MAX_PAGE


class Ping(_Incoming, frozen=True, tag="ping"):
    pass


class Pong(_Incoming, frozen=True, tag="pong"):
    timestamp: Any = None


ClientMessage = Auth | Refresh | Join | Leave | History | SendMessage | ListRooms | Ping | Pong

INCOMING_TYPES: dict[str, type[ClientMessage]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (Auth, Refresh, Join, Leave, History, SendMessage, ListRooms, Ping, Pong)
}

DEFAULT_NAME = "Anonymous"


class Parser:
    """Turns one client text frame into one valid typed message, or raises `ChatError`."""

    def __init__(self, max_text: int) -> None:
        self._max_text = max_text
        self._decode = msgspec.json.Decoder().decode
        self._decode_message: Callable[[str], ClientMessage] = msgspec.json.Decoder(
            ClientMessage).decode

    def parse(self, data: str) -> ClientMessage:
        """A valid frame decodes straight into its type; any other is decoded again, step by
        step, to name what is wrong with it (about half the cost, on every chat message)."""
        try:
            return self._checked(self._decode_message(data))
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return self._parse_stepwise(data)

    def _parse_stepwise(self, data: str) -> ClientMessage:
        raw = self._decode_object(data)
        kind = raw.get("type")
        if not isinstance(kind, str):
            raise ChatError(ErrorCode.INVALID_FORMAT, "Field 'type' must be a string")
        cls = INCOMING_TYPES.get(kind)
        if cls is None:
            raise ChatError(ErrorCode.UNKNOWN_TYPE, f"Unknown message type: {quoted(kind)}")
        try:
            message = cast(ClientMessage, msgspec.convert(raw, cls))
        except msgspec.ValidationError as exc:
            raise ChatError(ErrorCode.INVALID_FORMAT, str(exc)) from None
        return self._checked(message)

    def _decode_object(self, data: str) -> dict[str, Any]:
        try:
            raw = self._decode(data)
        except msgspec.DecodeError:
            raise ChatError(ErrorCode.INVALID_FORMAT, "Frame is not valid JSON") from None
        except RecursionError:  # msgspec stops at the interpreter's depth, about 1,000
            raise ChatError(ErrorCode.INVALID_FORMAT, "Frame is nested too deeply") from None
        if not isinstance(raw, dict):
            raise ChatError(ErrorCode.INVALID_FORMAT, "Frame must be a JSON object")
        return raw

    def _checked(self, message: ClientMessage) -> ClientMessage:
        match message:
            case Auth(name=str(name)):
                return msgspec.structs.replace(message, name=checked_name(name))
            case Join(room=room):
                return msgspec.structs.replace(message, room=checked_room(room))
            case SendMessage(text=text):
                self.check_text(text)
        return message

    def check_text(self, text: str | None) -> None:
        """A message text as the rules accept it (`text_required`, `text_too_long`,
        `invalid_text` otherwise): a member's, or one the server API posts."""
        if text is None or not text.strip():
            raise ChatError(ErrorCode.TEXT_REQUIRED, "Message text is required")
        if len(text) > self._max_text:
            raise ChatError(
                ErrorCode.TEXT_TOO_LONG, f"Message text exceeds {self._max_text} characters"
            )
        if CONTROL.search(text):
            raise ChatError(ErrorCode.INVALID_TEXT, "Message text may hold no control "
                            "character but tab and newline")


def checked_name(name: str) -> str:
    """The display name as the rules accept it (node.identity.rules), or `invalid_name`."""
    try:
        return rules.checked_name(name)
    except rules.InvalidName as refused:
        raise ChatError(ErrorCode.INVALID_NAME, str(refused)) from None


def checked_room(room: str | None) -> str:
    """The room name as the rules accept it (node.identity.rules), or `invalid_room`."""
    try:
        return rules.checked_room(room)
    except rules.InvalidRoom as refused:
        raise ChatError(ErrorCode.INVALID_ROOM, str(refused)) from None


# --- server -> client ------------------------------------------------------------------


class _Event(msgspec.Struct, frozen=True, tag_field="type", rename="camel"):
    pass


class AuthSuccess(_Event, frozen=True, tag="auth_success"):
    """`token`: the resume token (anonymous mode); `exp`: when the JWT expires (JWT mode)."""

    user_id: str
    name: str
    node: str
    token: str | msgspec.UnsetType = msgspec.UNSET
    exp: int | msgspec.UnsetType = msgspec.UNSET


class Refreshed(_Event, frozen=True, tag="refreshed"):
    exp: int


class MemberInfo(msgspec.Struct, frozen=True, rename="camel"):
    user_id: str
    name: str


class RoomInfo(msgspec.Struct, frozen=True, rename="camel"):
    name: str
    user_count: int


class RoomJoined(_Event, frozen=True, tag="room_joined"):
    """`history`: the newest stored messages (a JSON array, see `history_array`), at most a
    window of them and a reply's bytes; `more`: the room keeps older ones (page them with
    `history`). `recovered` answers a join with `since`: whether the room still keeps
    everything after it. `presence` is the room's presence version of the `users`
    snapshot: presence events with a version up to it are already in the snapshot.
    `large`: the room has more members than a room lists (`users` and `members` are empty,
    `user_count` events follow)."""

    room: str
    history: msgspec.Raw
    more: bool
    users: list[str]
    members: list[MemberInfo]
    user_count: int
    seq: int
    epoch: str
    presence: int
    recovered: bool | msgspec.UnsetType = msgspec.UNSET
    large: bool | msgspec.UnsetType = msgspec.UNSET


class HistoryPage(_Event, frozen=True, tag="history"):
    """The answer to `history`: `messages` oldest first; `more`: the room keeps older ones;
    `epoch`: the incarnation of the room's history the seqs belong to."""

    room: str
    epoch: str
    messages: msgspec.Raw
    more: bool


def history_array(payloads: list[bytes]) -> msgspec.Raw:
    """Stored messages as one JSON array, embedded as is in a reply, never decoded: built
    once and shared by every reply of the same room state (node.chat.history_snapshots)."""
    return msgspec.Raw(b"[" + b",".join(payloads) + b"]")


class UserJoined(_Event, frozen=True, tag="user_joined"):
    """A membership change; `user_count` and `presence` (the room's presence version) are
    those right after it, assigned by the backend atomically with the change."""

    user: str
    user_id: str
    room: str
    user_count: int
    presence: int


class UserLeft(_Event, frozen=True, tag="user_left"):
    user: str
    user_id: str
    room: str
    user_count: int
    presence: int


class UserCount(_Event, frozen=True, tag="user_count"):
    """A large room's newest member count and presence version: every change since the
    last one, in one (see node.chat.room_counts)."""

    room: str
    user_count: int
    presence: int


class RoomLeft(_Event, frozen=True, tag="room_left"):
    """`reason` "kicked": the application removed the member (server API `kick`)."""

    room: str
    reason: str | msgspec.UnsetType = msgspec.UNSET


class MessagesLost(_Event, frozen=True, tag="messages_lost"):
    """Seqs `from`..`to` of the room will never be delivered: the room said more than its
    history keeps while this node could not receive it, or the backend lost them. Sent in
    line, where those messages would have been; a client that already holds `to` (it joined
    after them) ignores it."""

    room: str
    first: int = msgspec.field(name="from")
    last: int = msgspec.field(name="to")


class HistoryReset(_Event, frozen=True, tag="history_reset"):
    """The room's history forked after `seq` into `epoch` (a Redis failover, or a Redis
    that lost its newest writes): messages after `seq` that the client holds may exist
    nowhere else, and messages after it that were acknowledged to their senders but not
    delivered may be lost. What follows is `epoch`'s, from `seq + 1`. Sent in line."""

    room: str
    epoch: str
    seq: int


class ChatMessage(_Event, frozen=True, tag="message"):
    """A chat message before its room assigns the seq; see `message_template`."""

    room: str
    user: str
    user_id: str
    text: str
    timestamp: str
    id: str
    client_id: str | msgspec.UnsetType = msgspec.UNSET
    system: bool | msgspec.UnsetType = msgspec.UNSET  # posted by the application itself


class MessageDeleted(_Event, frozen=True, tag="message_deleted"):
    """Message `seq` of the room was deleted (server API `delete`); history holds its
    tombstone (`deleted`, no text) in its place. Comes in the room's order."""

    room: str
    seq: int


class MessageSent(_Event, frozen=True, tag="message_sent"):
    """The sender's acknowledgement of a message with a `clientId`: stored as `seq` (of the
    room's current epoch). `duplicate`: it was stored before under the same `clientId`, and
    this send did nothing. (A message without a clientId has its echo as acknowledgement.)"""

    room: str
    seq: int
    client_id: str | msgspec.UnsetType = msgspec.UNSET
    duplicate: bool | msgspec.UnsetType = msgspec.UNSET


class RoomList(_Event, frozen=True, tag="room_list"):
    """`next`: the offset of the next page, or null on the last one."""

    rooms: list[RoomInfo]
    total: int
    next: int | None


class ServerPing(_Event, frozen=True, tag="ping"):
    timestamp: int


class ServerPong(_Event, frozen=True, tag="pong"):
    timestamp: Any


class ServerShutdown(_Event, frozen=True, tag="server_shutdown"):
    reconnect: bool = True
    retry_after_ms: int = 0


class Error(_Event, frozen=True, tag="error"):
    code: ErrorCode | str  # str: a code of the application's (its publish or connect hook)
    message: str


Event = (
    AuthSuccess | Refreshed | RoomJoined | HistoryPage | UserJoined | UserLeft | UserCount
    | RoomLeft | MessagesLost | HistoryReset | ChatMessage | MessageSent | MessageDeleted
    | RoomList | ServerPing | ServerPong | ServerShutdown | Error
)

_encode = msgspec.json.Encoder().encode


def encode(event: Event) -> bytes:
    """The JSON payload of one event."""
    return _encode(event)


@functools.lru_cache(maxsize=1)
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def iso_timestamp() -> str:
    """Now in ISO 8601 UTC with milliseconds, e.g. 2026-11-25T20:51:24.123Z. The date and
    time of day are formatted once a second: datetime's isoformat was 1.7 µs of every
    message."""
    second, nanos = divmod(time.time_ns(), 1_000_000_000)
    return f"{_iso_second(second)}.{nanos // 1_000_000:03d}Z"


def message_id() -> str:
    """A new message's `id`: 128 random bits in hex, as `uuid4().hex` gave, without its system
    call per message (an id names a message; it guards nothing)."""
    return f"{random.getrandbits(128):032x}"


def message_template(message: ChatMessage) -> bytes:
    """The JSON of a message, open at the end for its seq: `stamp` closes it.

    The room's seq is assigned where the message is stored (atomically, in the broker),
    so the sender encodes everything else once and the broker appends the number.
    """
    return _encode(message)[:-1] + b',"seq":'


_OPEN_AT_COUNT = b'"userCount":0,"presence":0}'


def presence_templates(room: str, member_id: str, name: str) -> tuple[Template, Template]:
    """`user_joined` and `user_left` of a member, open for the count and presence version
    that the backend assigns with the change (`node.backends.envelope.close` completes them)."""
    return tuple(  # type: ignore[return-value]
        _open_at_count(_encode(kind(user=name, user_id=member_id, room=room, user_count=0,
                                    presence=0)))
        for kind in (UserJoined, UserLeft))


def _open_at_count(data: bytes) -> Template:
    assert data.endswith(_OPEN_AT_COUNT)
    return data[:-len(_OPEN_AT_COUNT)] + b'"userCount":', b',"presence":'


class _Count(msgspec.Struct, rename="camel"):
    user_count: int


_decode_count: Callable[[bytes], _Count] = msgspec.json.Decoder(_Count).decode


def presence_count(payload: bytes) -> int:
    """The member count a presence event (`user_joined`, `user_left`, `user_count`) carries."""
    return _decode_count(payload).user_count


def count_update(change: Publication) -> tuple[Publication, bytes]:
    """The `user_count` that sums a room's membership changes up to `change` (the newest):
    as a publication (what a session holds while it joins) and as a frame."""
    payload = _encode(UserCount(room=change.room, user_count=presence_count(change.payload),
                                presence=change.presence))
    return Publication(change.room, UNSEQUENCED, payload, presence=change.presence), frame(payload)


def frame(payload: bytes) -> bytes:
    """A complete WebSocket text frame of one encoded event."""
    return frames.frame(frames.OP_TEXT, payload)


def event_frame(event: Event) -> bytes:
    """One event, encoded and framed."""
    return frame(_encode(event))


def event_payload(event: Event) -> bytes:
    """One event, encoded, for the broker to carry to a room's members."""
    return _encode(event)


def tombstone(stored: bytes) -> bytes | None:
    """A deleted message's place in history: the message without its text (and clientId),
    marked `"deleted": true`, its seq, author and time kept; None when `stored` is one."""
    message = msgspec.json.decode(stored)
    if message.get("deleted"):
        return None
    message.pop("clientId", None)
    return _encode({**message, "text": "", "deleted": True})
