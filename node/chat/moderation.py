"""Moderation that acts on connections anywhere in the cluster (the server API's disconnect,
ban and kick): the node that takes the command records a ban in shared state and publishes
the command on the control channel; every node, itself included, closes (or takes out of the
room) its own sessions of the user. A ban then refuses the user's `auth` (or, from a room,
its `join`) on any node until it ends."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from node.backends.broker import CONTROL, Broker
from node.backends.coordination import Coordination
from node.background import Background
from node.chat.disconnect import Disconnect
from node.chat.hub import Hub
from node.chat.session import Session

log = logging.getLogger("node.chat.moderation")


class _Command(msgspec.Struct, frozen=True, tag_field="kind", rename="camel"):
    """A command on the control channel, node to node (msgspec JSON)."""


class DisconnectUser(_Command, frozen=True, tag="disconnect"):
    user_id: str
    code: int
    reason: str


class KickUser(_Command, frozen=True, tag="kick"):
    user_id: str
    room: str


Command = DisconnectUser | KickUser


# Told of each ban (user id, until, room or "" for the cluster) once it holds: the webhooks'
# user_banned.
Banned = Callable[[str, float, str], Awaitable[None]]


async def _untold(user_id: str, until: float, room: str) -> None:
    """No one to tell of bans."""


class Moderation:
    def __init__(self, hub: Hub, broker: Broker, coordination: Coordination,
                 kick: Callable[[Session, str], Coroutine[Any, Any, None]],
                 banned: Banned = _untold) -> None:
        self._hub = hub
        self._banned = banned
        self._broker = broker
        self._coordination = coordination
        self._kick = kick  # takes a session out of a room, telling it why
        self._decode: Callable[[bytes], Command] = msgspec.json.Decoder(Command).decode
        self._acting = Background()

    async def listen(self) -> None:
        """Carry out what comes on the control channel (returns once subscribed)."""
        await self._hub.listen_to_control(self.carry_out)

    async def disconnect(self, user_id: str, code: int, reason: str,
                         ban_until: float | None) -> None:
        """Close every connection of the user, on every node, with `code` and `reason`;
        with `ban_until`, refuse its connections until then first (so that none slips in)."""
        if ban_until is not None:
            await self._coordination.ban(user_id, ban_until)
            await self._banned(user_id, ban_until, "")
        await self._broker.publish_event(
            CONTROL, msgspec.json.encode(DisconnectUser(user_id, code, reason)))

    async def kick(self, user_id: str, room: str, ban_until: float | None) -> None:
        """Take every connection of the user out of `room`, on every node; with
        `ban_until`, refuse its joins of the room until then first."""
        if ban_until is not None:
            await self._coordination.ban(user_id, ban_until, room)
            await self._banned(user_id, ban_until, room)
        await self._broker.publish_event(CONTROL, msgspec.json.encode(KickUser(user_id, room)))

    def carry_out(self, payload: bytes) -> None:
        """A command from the control channel, for this node's own sessions."""
        try:
            command = self._decode(payload)
        except msgspec.DecodeError as error:  # a newer node's command, or not ours
            log.warning("ignoring a control command: %s", error)
            return
        sessions = [s for s in self._hub.sessions
                    if s.member is not None and s.member.id == command.user_id]
        for session in sessions:
            match command:
                case DisconnectUser(code=code, reason=reason):
                    self._acting.spawn(session.close(Disconnect(code, reason, reconnect=False)),
                                       "moderation close")
                case KickUser(room=room):
                    self._acting.spawn(self._kick(session, room), "moderation kick")
