"""Coordination in Redis: a liveness key per node that the node keeps from expiring, the
cluster secret, and the drain lock. All cluster-wide keys: one slot of a Redis Cluster."""

from __future__ import annotations

import secrets
from typing import cast

from node.backends.redis.lua import lua_script
from node.backends.redis.script_pipeline import ScriptPipeline
from node.backends.redis.support import (
    Client, RedisKeys, hold_until, members, translate_errors,
)
from node.ratelimit import Budget

# KEYS: the node's liveness key, the set of nodes (one slot). ARGV: node id, ttl (ms).
# Returns 1 when the liveness key had lapsed (or never was).
HEARTBEAT = lua_script("heartbeat")

# KEYS: a budget's bucket (cluster-wide keys: one slot). ARGV: its limit, window (ms).
# Returns 1 when one event was taken, 0 when the budget is spent.
TAKE = lua_script("take", "budget")

RELEASE_LOCK = lua_script("release_lock")

BAN_ENDS = lua_script("ban_ends")


class RedisCoordination:
    def __init__(self, redis: Client, prefix: str, node_id: str, ttl: float) -> None:
        self._redis = redis  # the node's, shared with its broker
        self._keys = RedisKeys(prefix)
        self._node_id = node_id
        self._ttl_ms = int(ttl * 1000)
        self._heartbeat = self._redis.register_script(HEARTBEAT)
        self._unlock_drain = self._redis.register_script(RELEASE_LOCK)
        self._take = self._redis.register_script(TAKE)
        self._ban_ends = self._redis.register_script(BAN_ENDS)
        # Every session's auth and join look for a ban: redis-py's pooled path took 18 % of
        # a node admitting a reconnect storm (docs/performance-history.md, *Admission in a
        # storm*).
        self._pipeline = ScriptPipeline(redis, [self._ban_ends])
        self._secret: bytes | None = None

    async def close(self) -> None:
        """Its pipelined connections (the client is the node's)."""
        await self._pipeline.close()

    @translate_errors
    async def secret(self) -> bytes:
        if self._secret is None:
            key = self._keys.secret
            await self._redis.set(key, secrets.token_hex(32), nx=True)
            self._secret = cast(bytes, await self._redis.get(key))
        return self._secret

    @translate_errors
    async def heartbeat(self, connections: int = 0) -> bool:
        return bool(await self._heartbeat(
            keys=[self._keys.node_alive(self._node_id), self._keys.nodes],
            args=[self._node_id, self._ttl_ms, connections]))

    async def live_nodes(self) -> list[str]:
        return sorted(await self.node_connections())

    @translate_errors
    async def node_connections(self) -> dict[str, int]:
        nodes = sorted(n.decode() for n in await members(self._redis, self._keys.nodes))
        async with self._redis.pipeline() as pipe:
            for node in nodes:
                pipe.get(self._keys.node_alive(node))
            counts = await pipe.execute()
        return {node: int(count) for node, count in zip(nodes, counts, strict=True)
                if count is not None}

    @translate_errors
    async def lock_drain(self, ttl: float) -> str | None:
        key = self._keys.drain_lock
        if await self._redis.set(key, self._node_id, nx=True, px=int(ttl * 1000)):
            return None
        holder = cast(bytes | None, await self._redis.get(key))
        return holder.decode() if holder else await self.lock_drain(ttl)

    @translate_errors
    async def unlock_drain(self) -> None:
        await self._unlock_drain(keys=[self._keys.drain_lock], args=[self._node_id])

    @translate_errors
    async def ban(self, user_id: str, until: float, room: str = "") -> None:
        await hold_until(self._redis, self._keys.ban(user_id, room), until)

    @translate_errors
    async def banned_until(self, user_id: str, room: str = "") -> float | None:
        until = await self._pipeline.run(self._ban_ends, [self._keys.ban(user_id, room)], [])
        return None if until is None else float(until)

    @translate_errors
    async def take(self, budget: Budget) -> bool:
        key = self._keys.budget(budget.bucket)
        return bool(await self._take(keys=[key], args=[budget.limit, int(budget.window * 1000)]))
