"""In-memory presence for the embedded single-node mode."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from node.presence import DEFAULT_ROOMS, Departure, Joined, Member, RoomCount


@dataclass(slots=True)
class MemoryPresence:
    """Room -> members, in insertion order; rooms are never forgotten."""

    node_id: str
    _rooms: dict[str, dict[str, Member]] = field(default_factory=dict)
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    async def start(self) -> None:
        for room in DEFAULT_ROOMS:
            self._rooms.setdefault(room, {})

    async def close(self) -> None:
        pass

    async def join(self, room: str, member: Member) -> Joined:
        members = self._rooms.setdefault(room, {})
        added = member.id not in members
        members[member.id] = member
        return Joined(list(members.values()), added)

    async def leave(self, room: str, member: Member) -> int | None:
        members = self._rooms.get(room, {})
        members.pop(member.id, None)
        return len(members)

    async def members(self, room: str) -> list[Member]:
        return list(self._rooms.get(room, {}).values())

    async def rooms(self) -> list[RoomCount]:
        return [RoomCount(name, len(members)) for name, members in sorted(self._rooms.items())]

    async def secret(self) -> bytes:
        return self._secret

    async def heartbeat(self) -> bool:
        return False

    async def reap(self) -> list[Departure]:
        return []

    async def resync(self, held: list[tuple[str, Member]]) -> None:
        pass

    async def live_nodes(self) -> list[str]:
        return [self.node_id]

    async def lock_drain(self, ttl: float) -> str | None:
        return None

    async def unlock_drain(self) -> None:
        pass
