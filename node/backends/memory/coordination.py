"""Coordination of the embedded single-node mode: the node is the whole cluster."""

from __future__ import annotations

import secrets
import time

from node.backends.memory.deadlines import Deadlines
from node.ratelimit import Budget, Budgets


class MemoryCoordination:
    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self._secret = secrets.token_bytes(32)
        self._budgets = Budgets()
        self._connections = 0  # as of the last heartbeat
        self._bans: Deadlines[tuple[str, str]] = Deadlines()  # (room or "", user id)

    async def close(self) -> None:
        pass

    async def secret(self) -> bytes:
        return self._secret

    async def heartbeat(self, connections: int = 0) -> bool:
        self._connections = connections
        return False  # nobody else could have reaped this node

    async def live_nodes(self) -> list[str]:
        return [self._node_id]

    async def node_connections(self) -> dict[str, int]:
        return {self._node_id: self._connections}

    async def lock_drain(self, ttl: float) -> str | None:
        return None  # no other node can be draining

    async def unlock_drain(self) -> None:
        pass

    async def take(self, budget: Budget) -> bool:
        return self._budgets.take_all([budget], time.time()) is None

    async def ban(self, user_id: str, until: float, room: str = "") -> None:
        self._bans.set((room, user_id), until)

    async def banned_until(self, user_id: str, room: str = "") -> float | None:
        return self._bans.until((room, user_id))
