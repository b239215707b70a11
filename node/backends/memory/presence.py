"""In-memory presence for the embedded single-node mode: one node holds every member.

A change and its announcement are one step because nothing awaits between them: the
announcement goes to the in-memory broker synchronously.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

from node.backends.envelope import UNSEQUENCED, Publication, Template, close
from node.backends.presence import (
    Announcements, Departure, HeldName, Joined, Member, RoomCount, RoomLimit, RoomPage,
    RoomPolicy, Roster, creation_refusal,
)
from node.ratelimit import Budgets

FOREVER = float("inf")


class MemoryPresence:
    """Room -> members in insertion order, and the directory with created rooms' expiry."""

    def __init__(self, policy: RoomPolicy, announcements: Announcements,
                 publish: Callable[[Publication], None], expired: Callable[[str], None]
                 ) -> None:
        self._policy = policy
        self._announcements = announcements
        self._publish = publish  # the in-memory broker's delivery, synchronous
        self._expired = expired  # drops an expired room's history
        self._members: dict[str, dict[str, Member]] = {}
        self._farewells: dict[str, dict[str, Template]] = {}  # room -> member id -> user_left
        self._versions: dict[str, int] = {}  # room -> presence version
        self._names: list[str] = []  # every room, sorted
        self._created: dict[str, float] = {}  # created room -> expires at (monotonic)
        self._creations = Budgets()
        self._name_owners: dict[str, tuple[str, int]] = {}  # form -> (user id, connections)

    async def start(self) -> None:
        for room in self._policy.fixed:
            self._register(room)

    async def close(self) -> None:
        pass

    async def join(self, room: str, member: Member, exclude: str, address: str) -> Joined:
        now = time.monotonic()
        self._prune(now)
        if room not in self._policy.fixed and room not in self._created:
            self._allow_creation(member, address)
        if room not in self._policy.fixed:
            self._created[room] = FOREVER
        self._register(room)
        members = self._members.setdefault(room, {})
        added = member.id not in members
        members[member.id] = member
        hello, self._farewells.setdefault(room, {})[member.id] = self._announcements(room, member)
        if added:
            self._announce(room, hello, exclude)
        return Joined(self._roster(room), added)

    def _announce(self, room: str, template: Template, exclude: str) -> None:
        version = self._versions[room] = self._versions.get(room, 0) + 1
        payload = close(template, len(self._members.get(room, {})), version)
        self._publish(Publication(room, UNSEQUENCED, payload, exclude, version))

    def _roster(self, room: str) -> Roster:
        members = self._members.get(room, {})
        listed = list(members.values()) if len(members) <= self._policy.listed else []
        return Roster(listed, self._versions.get(room, 0), len(members))

    def _allow_creation(self, member: Member, address: str) -> None:
        if len(self._created) >= self._policy.max_rooms:
            raise RoomLimit("the cluster has its maximum of rooms")
        budgets = self._policy.creations(member.id, address)
        spent = self._creations.take_all(budgets, time.time())
        if spent is not None:
            raise RoomLimit(creation_refusal(budgets.index(spent)))

    def _register(self, room: str) -> None:
        at = bisect.bisect_left(self._names, room)
        if at == len(self._names) or self._names[at] != room:
            self._names.insert(at, room)

    async def leave(self, room: str, member: Member) -> bool:
        members = self._members.get(room, {})
        if members.pop(member.id, None) is None:
            return False
        self._announce(room, self._farewells[room].pop(member.id), "")
        if not members:
            del self._members[room], self._farewells[room]
            if room in self._created:
                self._created[room] = time.monotonic() + self._policy.ttl
        return True

    def _prune(self, now: float) -> None:
        for room in [r for r, expires in self._created.items() if expires <= now]:
            del self._created[room]
            self._names.remove(room)
            self._versions.pop(room, None)
            self._expired(room)

    async def roster(self, room: str) -> Roster:
        return self._roster(room)

    async def room_exists(self, room: str) -> bool:
        self._prune(time.monotonic())
        at = bisect.bisect_left(self._names, room)
        return at < len(self._names) and self._names[at] == room

    async def rooms(self, offset: int, limit: int) -> RoomPage:
        self._prune(time.monotonic())
        page = self._names[offset:offset + limit]
        return RoomPage([RoomCount(name, len(self._members.get(name, {}))) for name in page],
                        len(self._names))

    async def reap(self) -> list[Departure]:
        return []  # no other node to die

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
        pass  # nothing shared to have forgotten them
