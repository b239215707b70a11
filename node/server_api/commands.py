"""The server API's commands: what each takes, checks and does, from any node, for the whole
cluster (docs/server-api.md). A command gets a JSON object and answers a JSON value or raises
`ApiError` with a machine code; bodies are typed and bounded (msgspec), unknown fields are
refused so that a typo does not pass unnoticed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from node.backends.broker import Broker, Muted
from node.backends.coordination import Coordination
from node.backends.errors import OutcomeUnknown, Unavailable
from node.backends.presence import Presence
from node.chat.directory import Directory
from node.chat.handlers import Author, Handlers
from node.chat.moderation import Moderation
from node.chat.protocol import (
    MAX_OFFSET, MAX_PAGE, ChatError, ClientId, Parser, checked_name, checked_room,
)
from node.identity.api_keys import Scope

MAX_BROADCAST = 100  # rooms of one broadcast
MAX_BATCH = 100  # commands of one batch
MAX_USER_ID = 128  # characters of a userId the application names
MAX_UNTIL = 2**33  # Unix seconds: past the year 2200, so no float overflows a backend
DISCONNECT_CODE = 4002  # a close code of the application range: the client does not come back
MAX_REASON = 60  # characters of a close reason (a close frame holds 123 bytes of it)
SYSTEM_NAME = "System"  # the author of a message the application posts as itself


class ApiError(Exception):
    """A refused command: its HTTP status and machine code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    pass


UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_USER_ID)]


class PublishBody(_Body, frozen=True):
    room: str
    text: str
    user_id: UserId | None = None
    name: str | None = None
    client_id: ClientId | None = None


class BroadcastBody(_Body, frozen=True):
    rooms: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_BROADCAST)]
    text: str
    user_id: UserId | None = None
    name: str | None = None
    client_id: ClientId | None = None


class RoomBody(_Body, frozen=True):
    room: str


class DisconnectBody(_Body, frozen=True):
    user_id: UserId
    code: Annotated[int, msgspec.Meta(ge=4000, le=4999)] = DISCONNECT_CODE
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON)] = "Disconnected"
    until: Annotated[float, msgspec.Meta(ge=0, le=MAX_UNTIL)] | None = None


class KickBody(_Body, frozen=True):
    room: str
    user_id: UserId
    until: Annotated[float, msgspec.Meta(ge=0, le=MAX_UNTIL)] | None = None


class DeleteBody(_Body, frozen=True):
    room: str
    seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_OFFSET)]


class MuteBody(_Body, frozen=True):
    room: str
    user_id: UserId
    until: Annotated[float, msgspec.Meta(ge=0, le=MAX_UNTIL)]


class HistoryBody(_Body, frozen=True):
    room: str
    since: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)] | None = None
    before: Annotated[int, msgspec.Meta(ge=1, le=MAX_OFFSET)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = MAX_PAGE


class RoomsBody(_Body, frozen=True):
    offset: Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = MAX_PAGE


class InfoBody(_Body, frozen=True):
    pass


class BatchBody(_Body, frozen=True):
    commands: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


@dataclass(frozen=True, slots=True)
class _Command:
    scope: Scope
    body: type[_Body]
    run: Callable[[Any], Awaitable[Any]]


@dataclass
class ServerApi:
    """Every command, over the node's chat domain and backends."""

    handlers: Handlers
    broker: Broker
    presence: Presence
    coordination: Coordination
    directory: Directory
    moderation: Moderation
    parser: Parser  # the text rules of members' messages
    reply_bytes: int  # bytes of history one answer carries at most
    node_info: Callable[[], dict[str, Any]]  # this node, as `info` tells of it
    commands: dict[str, _Command] = field(init=False)

    def __post_init__(self) -> None:
        self.commands = {
            "publish": _Command(Scope.PUBLISH, PublishBody, self._publish),
            "broadcast": _Command(Scope.PUBLISH, BroadcastBody, self._broadcast),
            "disconnect": _Command(Scope.ADMIN, DisconnectBody, self._disconnect),
            "kick": _Command(Scope.ADMIN, KickBody, self._kick),
            "mute": _Command(Scope.ADMIN, MuteBody, self._mute),
            "delete": _Command(Scope.ADMIN, DeleteBody, self._delete),
            "presence": _Command(Scope.ADMIN, RoomBody, self._presence_of),
            "presence_stats": _Command(Scope.ADMIN, RoomBody, self._presence_stats),
            "history": _Command(Scope.ADMIN, HistoryBody, self._history),
            "rooms": _Command(Scope.ADMIN, RoomsBody, self._rooms),
            "info": _Command(Scope.ADMIN, InfoBody, self._info),
        }

    def command(self, name: str) -> _Command:
        """The command `name` (`batch` is the listener's: it runs these)."""
        command = self.commands.get(name)
        if command is None:
            raise ApiError(404, "unknown_command", f"No command {name[:32]!r}")
        return command

    @staticmethod
    def body_of(body: type[_Body], raw: Any) -> Any:
        """A command's typed body, or `invalid_request` saying what is wrong."""
        try:
            return msgspec.convert(raw, body)
        except msgspec.ValidationError as error:
            raise ApiError(400, "invalid_request", str(error)[:200]) from None

    async def run(self, command: _Command, body: Any) -> Any:
        """Run a command with its typed body: its result, or ApiError."""
        try:
            return await command.run(body)
        except ChatError as refused:
            raise ApiError(400, refused.code, str(refused)) from None
        except Muted:
            raise ApiError(403, "muted", "That user is muted in this room") from None
        except OutcomeUnknown:
            raise ApiError(503, "unknown_outcome", "No answer from the chat state: the "
                           "message may have been stored; send it again with the same "
                           "clientId (stored once)") from None
        except Unavailable:
            raise ApiError(503, "unavailable", "The chat state is unreachable; nothing was "
                           "done, retry soon") from None

    # Publishing.

    async def _publish(self, body: PublishBody) -> dict[str, Any]:
        room = await self._existing_room(body.room)
        return await self._post(room, body.text, self._author(body.user_id, body.name),
                                body.client_id)

    async def _broadcast(self, body: BroadcastBody) -> dict[str, Any]:
        author = self._author(body.user_id, body.name)
        self.parser.check_text(body.text)
        results = []
        for room in body.rooms:  # one by one: each room's order, and an error per room
            try:
                posted = await self._post(await self._existing_room(room), body.text, author,
                                          body.client_id)
                results.append({"room": room, **posted})
            except (ApiError, ChatError) as refused:
                results.append({"room": room[:64], "error": _error(refused)})
        return {"results": results}

    async def _post(self, room: str, text: str, author: Author, client_id: str | None
                    ) -> dict[str, Any]:
        self.parser.check_text(text)
        seq, duplicate = await self.handlers.publish(room, author, text, client_id)
        return {"seq": seq, **({"duplicate": True} if duplicate else {})}

    @staticmethod
    def _author(user_id: str | None, name: str | None) -> Author:
        """The application itself (`system`), or a user it names, with a display name."""
        if user_id is None:
            return Author("", SYSTEM_NAME if name is None else checked_name(name), system=True)
        if name is None:
            raise ApiError(400, "invalid_request", "A message on behalf of a userId needs "
                           "its name")
        return Author(user_id, checked_name(name))

    async def _existing_room(self, room: str) -> str:
        """A valid room name that the directory holds; a message to no room would keep its
        keys in Redis for good."""
        room = checked_room(room)
        if not await self.presence.room_exists(room):
            raise ApiError(404, "room_not_found", f"No room {room!r}: rooms are made by "
                           "joining them, or fixed with --rooms")
        return room

    # Moderation.

    async def _disconnect(self, body: DisconnectBody) -> dict[str, Any]:
        """Every connection of the user closed, on every node; with `until`, banned till
        then (its `auth` refused with `banned`, on any node)."""
        await self.moderation.disconnect(body.user_id, body.code, body.reason, body.until)
        return {"userId": body.user_id, **({"until": body.until} if body.until else {})}

    async def _kick(self, body: KickBody) -> dict[str, Any]:
        """The user taken out of the room on every node (`room_left` with reason
        `kicked`); with `until`, its joins of the room refused till then."""
        room = checked_room(body.room)
        await self.moderation.kick(body.user_id, room, body.until)
        return {"room": room, "userId": body.user_id,
                **({"until": body.until} if body.until else {})}

    async def _mute(self, body: MuteBody) -> dict[str, Any]:
        """The user's messages to the room refused (`muted`) until `until`, Unix seconds;
        they still read. A time past lifts the mute."""
        room = checked_room(body.room)
        await self.broker.mute(room, body.user_id, body.until)
        return {"room": room, "userId": body.user_id, "until": body.until}

    async def _delete(self, body: DeleteBody) -> dict[str, Any]:
        """A tombstone in the message's place in history (`deleted`, no text), and
        `message_deleted` to the room's members in its order."""
        room = checked_room(body.room)
        if not await self.handlers.delete(room, body.seq):
            raise ApiError(404, "message_not_found", f"{room!r} keeps no message {body.seq}")
        return {"room": room, "seq": body.seq}

    # Queries.

    async def _presence_of(self, body: RoomBody) -> dict[str, Any]:
        room = checked_room(body.room)
        roster = await self.presence.roster(room)
        return {"room": room, "userCount": roster.count, "presence": roster.version,
                "members": [{"userId": m.id, "name": m.name} for m in roster.members],
                **({"large": True} if roster.large else {})}

    async def _presence_stats(self, body: RoomBody) -> dict[str, Any]:
        room = checked_room(body.room)
        roster = await self.presence.roster(room)
        return {"room": room, "userCount": roster.count, "presence": roster.version}

    async def _history(self, body: HistoryBody) -> dict[str, Any]:
        room = checked_room(body.room)
        window = await self.broker.history(room, body.limit, after=body.since,
                                            before=body.before, max_bytes=self.reply_bytes)
        return {"room": room, "epoch": window.epoch, "seq": window.seq,
                "firstSeq": window.first_seq, "more": window.more,
                "messages": [msgspec.json.decode(message) for message in window.messages]}

    async def _rooms(self, body: RoomsBody) -> dict[str, Any]:
        page = await self.directory.page(body.offset, body.limit)
        return {"rooms": [{"name": room.name, "userCount": room.user_count}
                          for room in page.rooms],
                "total": page.total, "next": page.next_offset(body.offset)}

    async def _info(self, body: InfoBody) -> dict[str, Any]:
        nodes = await self.coordination.node_connections()
        return {"node": self.node_info(), "connections": sum(nodes.values()),
                "nodes": [{"id": node, "connections": count} for node, count in nodes.items()]}


def _error(refused: ApiError | ChatError) -> dict[str, str]:
    return {"code": refused.code, "message": str(refused)}
