"""In-memory presence for the embedded single-node mode."""

from __future__ import annotations

from dataclasses import dataclass, field

from node.presence import DEFAULT_ROOMS, Departure, Member, RoomCount


@dataclass(slots=True)
class MemoryPresence:
    """Room -> members, in insertion order; rooms are never forgotten."""

    node_id: str
    _rooms: dict[str, dict[str, Member]] = field(default_factory=dict)

    async def start(self) -> None:
        for room in DEFAULT_ROOMS:
            self._rooms.setdefault(room, {})

    async def close(self) -> None:
        pass

    async def join(self, room: str, member: Member) -> list[Member]:
        members = self._rooms.setdefault(room, {})
        members[member.id] = member
        return list(members.values())

    async def leave(self, room: str, member: Member) -> int:
        members = self._rooms.get(room, {})
        members.pop(member.id, None)
        return len(members)

    async def members(self, room: str) -> list[Member]:
        return list(self._rooms.get(room, {}).values())

    async def rooms(self) -> list[RoomCount]:
        return [RoomCount(name, len(members)) for name, members in sorted(self._rooms.items())]

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
