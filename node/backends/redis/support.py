"""What the Redis implementations share: the key layout, the client, error translation."""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from node.backends.errors import Unavailable

# A command waits at most this long for Redis before the caller gets `unavailable`.
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
# Connections one client keeps to Redis at most; more commands at once wait for one (up to
# COMMAND_TIMEOUT) instead of failing at once, as redis-py's default pool of 100 does.
POOL_SIZE = 64
# Connections to each node of a Redis Cluster, and how often a command is retried on the
# reloaded slots when its node failed (a failover takes ~2 s to promote a replica).
CLUSTER_POOL_SIZE = 256
CLUSTER_RETRIES = 6

P = ParamSpec("P")
T = TypeVar("T")


Client = redis.Redis | redis.RedisCluster


def connect(url: str, cluster: bool = False) -> Client:
    """A client that fails fast: one immediate retry (a pooled connection may be stale after a
    Redis restart), then the error goes to the caller instead of a long retry loop. Its pool
    is bounded and blocking: a burst of commands (a reconnect storm's joins) queues for a
    connection rather than opening hundreds or failing.

    With `cluster`, `url` is a seed node of a Redis Cluster: the client learns the slots from
    it and routes every command by its key (redis-py's cluster client; its pools per node are
    bounded but not blocking). It follows MOVED and, after a failed connection, reloads the
    slots and retries with backoff: a failover costs a caller the few seconds it takes."""
    if cluster:
        return redis.RedisCluster.from_url(
            url,
            max_connections=CLUSTER_POOL_SIZE,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), CLUSTER_RETRIES),
        )
    return redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=COMMAND_TIMEOUT,
        socket_timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    ))


def publish_command(client: Client) -> str:
    """How scripts publish on a room's channel: to the room's shard in a Redis Cluster, where
    plain PUBLISH would go to every node of the cluster."""
    return "SPUBLISH" if isinstance(client, redis.RedisCluster) else "PUBLISH"


REDIS_PY = str(Path(redis.__file__).parents[1]) + "/"
NODE = str(Path(__file__).parent) + "/"


def raised_in_redis_py(exc: BaseException) -> bool:
    """Whether `exc` came from inside redis-py (or what it called) rather than from our code.
    redis-py's cluster client can fail so while a failover tears connections down under a
    command in flight (seen: `AttributeError: 'NoneType' object has no attribute
    'writelines'` in its send_packed_command)."""
    files = [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
    return (any(name.startswith(REDIS_PY) for name in files)
            and not files[-1].startswith(NODE))


async def members(client: Client, key: str) -> set[bytes]:
    """A set's members (redis-py types replies as str or bytes; the node's client reads
    bytes)."""
    return await cast(Awaitable[set[bytes]], client.smembers(key))


def translate_errors(method: Callable[P, Coroutine[Any, Any, T]]
                     ) -> Callable[P, Coroutine[Any, Any, T]]:
    """Redis and socket failures leave the Redis layer as `Unavailable`, and so do errors
    raised inside redis-py itself: to a client they are the same outage."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise Unavailable(str(exc)) from exc
        except (AttributeError, TypeError) as exc:
            if not raised_in_redis_py(exc):
                raise
            raise Unavailable(f"redis client failed: {exc!r}") from exc

    return wrapper


async def hold_until(redis: Client, key: str, until: float) -> None:
    """`key` lives until `until` (Unix seconds) and holds that time; a time past deletes it
    (the mutes and bans the server API sets)."""
    if until <= time.time():
        await redis.delete(key)
    else:
        await redis.set(key, repr(until), pxat=int(until * 1000))


# The hash tag of the cluster-wide keys: every one of them is in one slot of a Redis Cluster,
# so that a script over several of them runs on one shard. No room has this name (room names
# are [A-Za-z0-9._-]).
SHARED_TAG = "@cluster"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Every key and channel of a cluster, under its prefix.

    A room's keys carry the room as their hash tag (`chat:{lobby}:seq`): in a Redis Cluster
    they share one slot, so one script on one shard publishes, numbers and stores a message
    and changes membership. Cluster-wide keys carry SHARED_TAG (`chat:{@cluster}:nodes`).
    The scripts of node.backends.redis.presence build the same names.
    """

    prefix: str

    def _room(self, room: str, kind: str) -> str:
        return f"{self.prefix}:{{{room}}}:{kind}"

    def _shared(self, kind: str) -> str:
        return f"{self.prefix}:{{{SHARED_TAG}}}:{kind}"

    def channel(self, room: str) -> str:
        """The Pub/Sub channel of a room (a shard channel in a Redis Cluster)."""
        return self._room(room, "channel")

    def node_channel(self, node_id: str) -> str:
        """A node's own channel: keeps its subscriber connected while it has no rooms."""
        return self._shared(f"node:{node_id}")

    def seq(self, room: str) -> str:
        return self._room(room, "seq")

    def epoch(self, room: str) -> str:
        """Random id of the room's current history; lost with it."""
        return self._room(room, "epoch")

    def parent(self, room: str) -> str:
        """The epoch that the current one forked from, sharing its seqs up to the fork's base:
        a member who last saw the parent resumes in the new one."""
        return self._room(room, "parent")

    def term(self, room: str) -> str:
        """The Redis Cluster node id of the primary that numbered the room's last message:
        a promoted replica numbering the next forks the history (a failover)."""
        return self._room(room, "term")

    def sent(self, room: str, key: str) -> str:
        """A sender's idempotency key for a message of the room, holding its seq."""
        return self._room(room, f"sent:{key}")

    def mute(self, room: str, user_id: str) -> str:
        """Lives while the user is muted in the room (its TTL: until when)."""
        return self._room(room, f"mute:{len(user_id)}:{user_id}")

    def history(self, room: str) -> str:
        """Sorted set of message JSON scored by seq."""
        return self._room(room, "history")

    def history_bytes(self, room: str) -> str:
        """The bytes of the messages in `history`, kept with it by the publish script."""
        return self._room(room, "history-bytes")

    def members(self, room: str) -> str:
        """Hash member id -> JSON [id, name]: who is in the room."""
        return self._room(room, "members")

    def holders(self, room: str) -> str:
        """Hash "member id NUL node id" -> 1: which nodes hold which member in the room."""
        return self._room(room, "holders")

    def farewells(self, room: str) -> str:
        """Hash: member id -> its `user_left` template, for whichever node releases it."""
        return self._room(room, "farewells")

    def presence_version(self, room: str) -> str:
        """The room's presence version: incremented by every membership change."""
        return self._room(room, "presence")

    def holds(self, room: str) -> str:
        """Hash member id -> how many nodes hold it in the room."""
        return self._room(room, "holds")

    @property
    def room_names(self) -> str:
        """Sorted set of every room (all scores 0: name order, for paging)."""
        return self._shared("rooms")

    @property
    def room_expiry(self) -> str:
        """Sorted set of rooms created by joining, scored by when they expire (ms since the
        epoch; +inf while someone is in them)."""
        return self._shared("rooms-created")

    def ban(self, user_id: str, room: str = "") -> str:
        """Lives while the user is banned from the cluster, or from `room` (its TTL and
        value: until when)."""
        user = f"{len(user_id)}:{user_id}"
        return self._room(room, f"ban:{user}") if room else self._shared(f"ban:{user}")

    def budget(self, key: str) -> str:
        """A budget's bucket (see `Budget.bucket`)."""
        return self._shared(f"budget:{key}")

    @property
    def nodes(self) -> str:
        """Set of nodes that may have members in presence."""
        return self._shared("nodes")

    @property
    def secret(self) -> str:
        """The cluster's random secret for resume tokens."""
        return self._shared("secret")

    @property
    def drain_lock(self) -> str:
        """Held by the one node that drains; expires so that a crashed drainer cannot block."""
        return self._shared("drain-lock")

    def node_alive(self, node_id: str) -> str:
        """Expiring key: the node is alive while it exists."""
        return self._shared(f"alive:{node_id}")

    def node_members(self, node_id: str) -> str:
        """Hash "room NUL member id" -> 1, for the members a node holds."""
        return self._shared(f"node-members:{node_id}")

    def hooks(self, room: str) -> str:
        """Stream of the room's events queued for the webhooks, in the room's order."""
        return self._room(room, "hooks")

    def hook_cursors(self, room: str) -> str:
        """Hash endpoint key -> id of the room's last event the endpoint had."""
        return self._room(room, "hook-cursors")

    def hook_rooms(self, partition: int) -> str:
        """Sorted set of the partition's rooms with webhook events waiting, scored by when
        they were last marked (ms)."""
        return self._shared(f"hook-rooms:{partition}")

    def hook_lease(self, partition: int) -> str:
        """Names the node that delivers the partition's webhooks; expires."""
        return self._shared(f"hook-lease:{partition}")

    def hook_dead(self, endpoint: str) -> str:
        """Stream of the webhooks an endpoint (by its key) never took in time."""
        return self._shared(f"hook-dead:{endpoint}")

    def settling(self, node_id: str) -> str:
        """Held (expiring) while one node settles a node's presence: a reaper releasing a dead
        node's members, or the node itself writing them back. Names its holder."""
        return self._shared(f"settling:{node_id}")
