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

# A command waits at most this long for Redis before the caller gets `unavailable`.
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0

P = ParamSpec("P")
T = TypeVar("T")


def connect(url: str) -> redis.Redis:
    """A client that fails fast: one immediate retry (a pooled connection may be stale after a
    Redis restart), then the error goes to the caller instead of a long retry loop."""
    return redis.Redis.from_url(
        url,
        socket_timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )


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
        """Hash member id -> packed (name, node id)."""
        return f"{self.prefix}:members:{room}"

    @property
    def rooms(self) -> str:
        """Set of every room ever joined."""
        return f"{self.prefix}:rooms"

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
        """Hash member id -> room, for the members a node holds."""
        return f"{self.prefix}:node-members:{node_id}"
