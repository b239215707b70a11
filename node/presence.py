"""The presence seam: who is in which room across the cluster, and the room directory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

DEFAULT_ROOMS = ("general", "random")


@dataclass(frozen=True, slots=True)
class Member:
    """One connected, authenticated user."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Joined:
    """Everyone in the room after a join, and whether the member was new there (a member
    resuming on another node within the presence grace is not)."""

    members: list[Member]
    added: bool


@dataclass(frozen=True, slots=True)
class RoomCount:
    name: str
    user_count: int


@dataclass(frozen=True, slots=True)
class Departure:
    """A member removed because its node died, and the room's count after."""

    room: str
    member: Member
    user_count: int


class Presence(Protocol):
    """Room membership and the list of rooms (the defaults plus every room ever joined)."""

    async def start(self) -> None:
        """Connect and create the default rooms."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def join(self, room: str, member: Member) -> Joined:
        """Add the member to the room (creating the room), as held by this node."""
        ...

    async def leave(self, room: str, member: Member) -> int | None:
        """Remove the member from the room if this node holds it; returns the room's count,
        or None when the member is held elsewhere now (it moved: nobody left)."""
        ...

    async def secret(self) -> bytes:
        """A random secret shared by the cluster: it signs resume tokens."""
        ...

    async def members(self, room: str) -> list[Member]:
        """Everyone in the room."""
        ...

    async def rooms(self) -> list[RoomCount]:
        """Every room, sorted by name, with its user count."""
        ...

    async def heartbeat(self) -> bool:
        """Prove this node alive; True when its liveness had lapsed (re-announce members)."""
        ...

    async def reap(self) -> list[Departure]:
        """Remove the members of nodes whose liveness expired; returns who left."""
        ...

    async def resync(self, held: list[tuple[str, Member]]) -> None:
        """Make this node's presence exactly `held` (room, member) pairs."""
        ...

    async def live_nodes(self) -> list[str]:
        """Nodes whose liveness has not expired, this one included."""
        ...

    async def lock_drain(self, ttl: float) -> str | None:
        """Take the cluster's drain lock for `ttl` seconds; None when taken, else the holder."""
        ...

    async def unlock_drain(self) -> None:
        """Release the drain lock if this node holds it."""
        ...
