"""In-memory presence for the embedded single-node mode: one node holds every member."""

from __future__ import annotations

import bisect
import secrets
import time
from collections.abc import Callable

from node.presence import (
    Departure, HeldName, Joined, Member, RoomCount, RoomLimit, RoomPage, RoomPolicy,
)
from node.ratelimit import Budgets

FOREVER = float("inf")


class MemoryPresence:
    """Room -> members in insertion order, and the directory with created rooms' expiry."""

    def __init__(self, node_id: str, policy: RoomPolicy,
                 expired: Callable[[str], None]) -> None:
        self.node_id = node_id
        self._policy = policy
        self._expired = expired  # drops an expired room's history
        self._members: dict[str, dict[str, Member]] = {}
        self._names: list[str] = []  # every room, sorted
        self._created: dict[str, float] = {}  # created room -> expires at (monotonic)
        self._creations = Budgets()
        self._secret = secrets.token_bytes(32)
        self._name_owners: dict[str, tuple[str, int]] = {}  # form -> (user id, connections)

    async def start(self) -> None:
        for room in self._policy.fixed:
            self._register(room)

    async def close(self) -> None:
        pass

    async def join(self, room: str, member: Member) -> Joined:
        now = time.monotonic()
        self._prune(now)
        if room not in self._policy.fixed and room not in self._created:
            self._allow_creation(member, now)
        if room not in self._policy.fixed:
            self._created[room] = FOREVER
        self._register(room)
        members = self._members.setdefault(room, {})
        added = member.id not in members
        members[member.id] = member
        return Joined(list(members.values()), added)

    def _allow_creation(self, member: Member, now: float) -> None:
        if len(self._created) >= self._policy.max_rooms:
            raise RoomLimit("the cluster has its maximum of rooms")
        if self._creations.take_all([self._policy.creations(member.id)], time.time()):
            raise RoomLimit("you have created too many rooms; join an existing one")

    def _register(self, room: str) -> None:
        at = bisect.bisect_left(self._names, room)
        if at == len(self._names) or self._names[at] != room:
            self._names.insert(at, room)

    async def leave(self, room: str, member: Member) -> int | None:
        members = self._members.get(room, {})
        if members.pop(member.id, None) is None:
            return None
        if not members:
            del self._members[room]
            if room in self._created:
                self._created[room] = time.monotonic() + self._policy.ttl
        return len(members)

    def _prune(self, now: float) -> None:
        for room in [r for r, expires in self._created.items() if expires <= now]:
            del self._created[room]
            self._names.remove(room)
            self._expired(room)

    async def members(self, room: str) -> list[Member]:
        return list(self._members.get(room, {}).values())

    async def rooms(self, offset: int, limit: int) -> RoomPage:
        self._prune(time.monotonic())
        page = self._names[offset:offset + limit]
        return RoomPage([RoomCount(name, len(self._members.get(name, {}))) for name in page],
                        len(self._names))

    async def secret(self) -> bytes:
        return self._secret

    async def heartbeat(self) -> bool:
        return False

    async def reap(self) -> list[Departure]:
        return []

    async def claim_name(self, forms: tuple[str, ...], user_id: str) -> str | None:
        for form in forms:
            owner, _ = self._name_owners.get(form, (user_id, 0))
            if owner != user_id:
                return owner
        for form in forms:
            self._name_owners[form] = (user_id, self._name_owners.get(form, (user_id, 0))[1] + 1)
        return None

    async def release_name(self, forms: tuple[str, ...]) -> None:
        for form in forms:
            owner, connections = self._name_owners.pop(form, ("", 0))
            if connections > 1:
                self._name_owners[form] = (owner, connections - 1)

    async def resync(self, held: list[tuple[str, Member]], names: list[HeldName]) -> None:
        pass

    async def live_nodes(self) -> list[str]:
        return [self.node_id]

    async def lock_drain(self, ttl: float) -> str | None:
        return None

    async def unlock_drain(self) -> None:
        pass
