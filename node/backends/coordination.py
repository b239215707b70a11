"""The coordination seam: what the nodes of a cluster agree on besides rooms — which nodes
are alive, the secret that signs resume tokens, the lock that lets one node drain at a
time, and allowances counted across the cluster."""

from __future__ import annotations

from typing import Protocol

from node.ratelimit import Budget


class Coordination(Protocol):
    async def close(self) -> None:
        """Release connections."""
        ...

    async def secret(self) -> bytes:
        """A random secret shared by the cluster: it signs resume tokens."""
        ...

    async def heartbeat(self, connections: int = 0) -> bool:
        """Prove this node alive, holding `connections` chat connections; True when its
        liveness had lapsed (its presence may have been reaped: the node writes it again)."""
        ...

    async def live_nodes(self) -> list[str]:
        """Nodes whose liveness has not expired, this one included."""
        ...

    async def node_connections(self) -> dict[str, int]:
        """Each live node's chat connections, as of its last heartbeat."""
        ...

    async def lock_drain(self, ttl: float) -> str | None:
        """Take the cluster's drain lock for `ttl` seconds; None when taken, else the holder."""
        ...

    async def unlock_drain(self) -> None:
        """Release the drain lock if this node holds it."""
        ...

    async def take(self, budget: Budget) -> bool:
        """Take one event from a cluster-wide allowance; False when it is spent."""
        ...

    async def ban(self, user_id: str, until: float, room: str = "") -> None:
        """Refuse the user until `until` (Unix seconds): its connections, or (`room`) its
        joins of that room. A time past lifts the ban."""
        ...

    async def banned_until(self, user_id: str, room: str = "") -> float | None:
        """When the user's ban (from the cluster, or from `room`) ends; None: no ban."""
        ...
