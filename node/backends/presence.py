"""The presence seam: who is in which room across the cluster, the room directory, and the
display names in use (anonymous mode: a name, and every name that looks like it, belongs to
one user at a time).

A membership change and its announcement to the room (`user_joined` / `user_left`) are one
atomic step of the backend, which numbers the room's changes (its presence version): a
member's snapshot carries the version it reflects, every announcement the version right
after its change, so members apply exactly the announcements newer than their snapshot.

A member is present in a room while at least one node holds it there; a node holds it while
at least one of its connections of that member is in the room. So a user on two tabs (or
two nodes) leaves the room when the last of them does.

Rooms: the fixed rooms always exist; joining creates any other room, within a cluster-wide
count and a per-user creation rate. An emptied created room expires, with its history,
after its time to live unless somebody joins it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from node.backends.envelope import Template
from node.ratelimit import Budget


@dataclass(frozen=True, slots=True)
class Member:
    """One connected, authenticated user."""

    id: str
    name: str


# A member's announcements in a room: its `user_joined` and `user_left` templates, completed
# by the backend with the room's count and presence version after the change.
Announcements = Callable[[str, Member], tuple[Template, Template]]


@dataclass(frozen=True, slots=True)
class Roster:
    """Everyone in a room, as of the room's presence version `version`: `count` members,
    listed in `members` unless there are more than a room lists (then it is `large`)."""

    members: list[Member]
    version: int
    count: int

    @property
    def large(self) -> bool:
        return len(self.members) < self.count


@dataclass(frozen=True, slots=True)
class Joined:
    """The room's roster right after a join, and whether the member was new there (a member
    resuming on another node within the presence grace is not, and is not announced)."""

    roster: Roster
    added: bool


@dataclass(frozen=True, slots=True)
class RoomCount:
    name: str
    user_count: int


@dataclass(frozen=True, slots=True)
class RoomPage:
    """A page of the room directory, in name order, and how many rooms there are."""

    rooms: list[RoomCount]
    total: int

    def next_offset(self, offset: int) -> int | None:
        """Where the page after this one (taken at `offset`) starts; None on the last."""
        after = offset + len(self.rooms)
        return after if after < self.total else None


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """Which rooms exist and how many joining may create."""

    fixed: tuple[str, ...]
    max_rooms: int  # rooms created by joining, cluster-wide
    rooms_per_hour: int  # rooms one user may create per hour
    ttl: float  # seconds an emptied created room is kept
    listed: int  # the most members a roster lists (node.chat.room_counts)
    # Rooms one client address may create per hour: fresh anonymous users do not reset it.
    address_rooms_per_hour: int = 60

    def creations(self, user_id: str, address: str) -> tuple[Budget, Budget]:
        """The allowances of rooms to create of the user and of its client address."""
        return (Budget("rooms", user_id, self.rooms_per_hour, 3600.0),
                Budget("address-rooms", address, self.address_rooms_per_hour, 3600.0))


def creation_refusal(spent: int) -> str:
    """Why a room was not created: the user's allowance (0) or its address's (1) is spent."""
    return ("you have created too many rooms; join an existing one" if spent == 0 else
            "your network has created too many rooms; join an existing one")


@dataclass(frozen=True, slots=True)
class HeldName:
    """One canonical form of a display name, the user holding it, and how many of this
    node's connections hold it."""

    form: str
    user_id: str
    connections: int


class RoomLimit(Exception):
    """Joining would create a room beyond the cluster's or the user's allowance."""


@dataclass(frozen=True, slots=True)
class Departure:
    """A member removed (and announced gone) because its node died."""

    room: str
    member: Member


class Presence(Protocol):
    """Room membership, the room directory and display names. Every change of membership
    is announced to the room by the backend itself, in the room's presence order."""

    async def start(self) -> None:
        """Connect and create the fixed rooms."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def join(self, room: str, member: Member, exclude: str, address: str) -> Joined:
        """Hold the member in the room from this node (creating the room, within the
        member's and its client `address`'s allowances, or raising `RoomLimit`), announcing
        it to every session but `exclude` when it is new there; idempotent."""
        ...

    async def leave(self, room: str, member: Member) -> bool:
        """This node no longer holds the member in the room; True when the member left it
        (and that was announced), False while another node still holds it."""
        ...

    async def roster(self, room: str) -> Roster:
        """Everyone in the room (listed up to the policy's `listed`), and the presence
        version that reflects."""
        ...

    async def room_exists(self, room: str) -> bool:
        """The room is in the directory: fixed, or created and not expired."""
        ...

    async def rooms(self, offset: int, limit: int) -> RoomPage:
        """`limit` rooms from `offset` in name order, with their user counts: the cost is
        one round trip and the page's size, whatever the number of rooms."""
        ...

    async def reap(self) -> list[Departure]:
        """Remove (and announce leaving) the members of nodes whose liveness expired;
        returns who left."""
        ...

    async def claim_name(self, forms: tuple[str, ...], user_id: str) -> str | None:
        """Hold a display name's forms for one more connection of the user; returns the id
        of another user who holds one of them (and holds nothing), else None."""
        ...

    async def release_name(self, forms: tuple[str, ...]) -> None:
        """One connection of this node no longer holds the name; its last frees it."""
        ...

    async def resync(self, held: list[tuple[str, Member]], names: list[HeldName]) -> None:
        """Make this node's presence exactly `held` (room, member) pairs (announcing who
        appears and who goes) and its names exactly `names`."""
        ...
