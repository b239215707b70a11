"""What the Redis implementations share: the key layout, the client, error translation."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from node.errors import Unavailable

# Budgets in Lua, as `node.ratelimit.Budgets` keeps them in memory: KEYS count one window's
# events of each budget (the key names its window, see `Budget.key`), at most `limits[i]`.
# `take` takes `slices[i]` from every budget (less where less is left) or, when one is
# spent, nothing: it returns 0 and what each budget granted, or the spent one's position.
LUA_BUDGET = """
local function take(keys, limits, windows_ms, slices)
  local grants = {}
  for i, key in ipairs(keys) do
    local count = redis.call('INCRBY', key, slices[i])
    if count == slices[i] then redis.call('PEXPIRE', key, windows_ms[i]) end
    local grant = slices[i] - math.max(count - limits[i], 0)
    if grant < slices[i] then redis.call('DECRBY', key, slices[i] - math.max(grant, 0)) end
    if grant <= 0 then
      for j = 1, i - 1 do redis.call('DECRBY', keys[j], grants[j]) end
      return i, grants
    end
    grants[i] = grant
  end
  return 0, grants
end
"""

# A command waits at most this long for Redis before the caller gets `unavailable`.
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
# Connections one client keeps to Redis at most; more commands at once wait for one (up to
# COMMAND_TIMEOUT) instead of failing at once, as redis-py's default pool of 100 does.
POOL_SIZE = 64

P = ParamSpec("P")
T = TypeVar("T")


def connect(url: str) -> redis.Redis:
    """A client that fails fast: one immediate retry (a pooled connection may be stale after a
    Redis restart), then the error goes to the caller instead of a long retry loop. Its pool
    is bounded and blocking: a burst of commands (a reconnect storm's joins) queues for a
    connection rather than opening hundreds or failing."""
    return redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=COMMAND_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    ))


def translate_errors(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Redis and socket failures leave the Redis layer as `Unavailable`."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise Unavailable(str(exc)) from exc

    return wrapper


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    def channel(self, room: str) -> str:
        """The Pub/Sub channel of a room."""
        return f"{self.prefix}:room:{room}"

    def node_channel(self, node_id: str) -> str:
        """A node's own channel: keeps its subscriber connected while it has no rooms."""
        return f"{self.prefix}:node:{node_id}"

    def seq(self, room: str) -> str:
        return f"{self.prefix}:seq:{room}"

    def epoch(self, room: str) -> str:
        """Random id of the room's current history; lost with it."""
        return f"{self.prefix}:epoch:{room}"

    def history(self, room: str) -> str:
        """Sorted set of message JSON scored by seq."""
        return f"{self.prefix}:history:{room}"

    def members(self, room: str) -> str:
        """Hash member id -> JSON [id, name]: who is in the room."""
        return f"{self.prefix}:members:{room}"

    def holders(self, room: str) -> str:
        """Hash "member id NUL node id" -> 1: which nodes hold which member in the room."""
        return f"{self.prefix}:holders:{room}"

    def farewells(self, room: str) -> str:
        """Hash: member id -> its `user_left` template, for whichever node releases it."""
        return f"{self.prefix}:farewells:{room}"

    def presence_version(self, room: str) -> str:
        """The room's presence version: incremented by every membership change."""
        return f"{self.prefix}:presence:{room}"

    def holds(self, room: str) -> str:
        """Hash member id -> how many nodes hold it in the room."""
        return f"{self.prefix}:holds:{room}"

    @property
    def room_names(self) -> str:
        """Sorted set of every room (all scores 0: name order, for paging)."""
        return f"{self.prefix}:rooms"

    @property
    def room_expiry(self) -> str:
        """Sorted set of rooms created by joining, scored by when they expire (ms since the
        epoch; +inf while someone is in them)."""
        return f"{self.prefix}:rooms-created"

    def budget(self, key: str) -> str:
        """A budget's count in one window (see `Budget.key`)."""
        return f"{self.prefix}:budget:{key}"

    @property
    def nodes(self) -> str:
        """Set of nodes that may have members in presence."""
        return f"{self.prefix}:nodes"

    @property
    def secret(self) -> str:
        """The cluster's random secret for resume tokens."""
        return f"{self.prefix}:secret"

    @property
    def drain_lock(self) -> str:
        """Held by the one node that drains; expires so that a crashed drainer cannot block."""
        return f"{self.prefix}:drain-lock"

    def node_alive(self, node_id: str) -> str:
        """Expiring key: the node is alive while it exists."""
        return f"{self.prefix}:alive:{node_id}"

    def node_members(self, node_id: str) -> str:
        """Hash "room NUL member id" -> 1, for the members a node holds."""
        return f"{self.prefix}:node-members:{node_id}"
