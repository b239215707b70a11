"""The hot Redis scripts over lean pipelined connections (node.backends.redis.connection): a
publish, a budget slice, every presence change. redis-py's script calls cost a node more than the
rest of a publish (docs/performance-history.md, *The script pipeline*); its clients still parse
the URL, follow a Redis Cluster's slot map and run what a shard redirects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError, ClusterDownError, ConnectionError, MovedError, NoScriptError, RedisError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from node.backends.redis.connection import Endpoint, NotSent, PipelinedConnection
from node.backends.redis.support import COMMAND_TIMEOUT, Client
from node.background import Background

log = logging.getLogger("node.backends.broker")

# How often a node looks at the slot map while a primary keeps its calls waiting.
FAILOVER_LOOK = 0.25

# Replies of a Redis Cluster's shard that no longer serves the slot (or not yet): the call
# runs again through redis-py's cluster client, which follows the slot map.
REDIRECTED: tuple[type[Exception], ...] = (MovedError, AskError, TryAgainError,
                                           ClusterDownError)


class ScriptPipeline:
    """Scripts go to Redis over a lean pipelined connection: the calls of one loop
    iteration as one write, replies completing them in order (auto-pipelining, as in
    ioredis). Redis runs them in arrival order; each caller gets its own reply or error.

    On a Redis Cluster there is such a connection to each primary, the one owning the room's
    slot; a call the shard no longer serves, or whose connection failed, runs again through
    redis-py's cluster client. On one Redis a call whose connection failed runs once more on
    a fresh one (as redis-py's client would), and a script Redis forgot is sent whole (EVAL)
    on the same connection, so that the calls keep their order. A call that is not
    `repeatable` (a publish: run twice, it stores the message twice) runs again only if it
    never left the node (`NotSent`); sent and unanswered, its ConnectionError goes to the
    caller, for whom the outcome is unknown."""

    def __init__(self, redis: Client, scripts: Sequence[AsyncScript],
                 on_failover: Callable[[str], None] | None = None) -> None:
        self._redis = redis
        self._on_failover = on_failover  # told the name of a primary the cluster replaced
        self._loads = tuple(("SCRIPT", "LOAD", script.script) for script in scripts)
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self._connections: dict[str, PipelinedConnection] = {}
        self._looking = Background()  # failover watches: one per stalled primary at most
        self._looked_at: set[str] = set()

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any],
                  repeatable: bool = True) -> Any:
        """The script's reply for this call (one of the scripts the pipeline was made for:
        every fresh connection loads them)."""
        if self._cluster is not None:
            await self._cluster.initialize()  # the slot map routes the call: loaded once
        try:
            return await self._call(b"EVALSHA", script.sha, keys, args)
        except NoScriptError:
            return await self._call(b"EVAL", script.script, keys, args)
        except RedisTimeoutError:
            if self._cluster is not None:
                await self._follow_failover(self._cluster, keys[0])
            raise
        except ConnectionError as lost:
            if not (repeatable or isinstance(lost, NotSent)):
                if self._cluster is not None:
                    await self._follow_failover(self._cluster, keys[0])
                raise
            if self._cluster is None:  # once more, on a fresh connection
                return await self._call(b"EVALSHA", script.sha, keys, args)
            reply = await script(keys=keys, args=args)  # reloads the slot map
            await self._close_replaced(self._cluster)
            return reply
        except REDIRECTED:
            return await script(keys=keys, args=args)

    def _call(self, command: bytes, script: str | bytes, keys: list[str], args: list[Any]
              ) -> asyncio.Future[Any]:
        return self._connection(keys[0]).call(command, script, len(keys), *keys, *args)

    async def close(self) -> None:
        for task in self._looking:
            task.cancel()
        for connection in self._connections.values():
            await connection.close()

    async def _follow_failover(self, cluster: RedisCluster, key: str) -> None:
        """The primary holding `key` stopped answering: it may be failing over. Reload the
        slot map now (asking that node last), so that the calls after this one go to its
        promoted replica as soon as the cluster names it, instead of waiting out another
        timeout on a connection to the old one (a resume after `unknown_outcome` did)."""
        failed = cluster.get_node_from_key(key)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await cluster.nodes_manager.initialize(
                    last_failed_node_name=None if failed is None else failed.name)
        await self._close_replaced(cluster)

    def _stalled(self, cluster: RedisCluster, name: str) -> None:
        """The primary `name` kept calls waiting for STALL_AFTER: watch for its failover."""
        if name not in self._looked_at:
            self._looked_at.add(name)
            self._looking.spawn(self._watch_failover(cluster, name), "failover watch")

    async def _watch_failover(self, cluster: RedisCluster, name: str) -> None:
        """While the connection to `name` stays stalled (up to COMMAND_TIMEOUT), reload the
        slot map every FAILOVER_LOOK seconds, asking `name` last; once another node holds
        its slots, drop the connection: the calls waiting on it end now (`unknown_outcome`
        for a publish) and the next go to the promoted replica, instead of each waiting out
        the timeout on a primary that the cluster already replaced."""
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                while (connection := self._connections.get(name)) is not None \
                        and connection.stalled:
                    with contextlib.suppress(RedisError, OSError, TimeoutError):
                        async with asyncio.timeout(FAILOVER_LOOK):
                            await cluster.nodes_manager.initialize(last_failed_node_name=name)
                    if name not in {node.name for node in cluster.get_primaries()}:
                        log.warning("Redis primary %s was failed over: its calls end now", name)
                        connection.drop(ConnectionError(f"{name} was failed over"))
                        await self._close_replaced(cluster)
                        if self._on_failover is not None:
                            self._on_failover(name)
                        return
                    await asyncio.sleep(FAILOVER_LOOK)
        except TimeoutError:
            pass  # the connection's own timeout has ended its calls
        finally:
            self._looked_at.discard(name)

    async def _close_replaced(self, cluster: RedisCluster) -> None:
        """Close the connections to nodes that are no longer primaries (failed over)."""
        primaries = {node.name for node in cluster.get_primaries()}
        for name in [name for name in self._connections if name not in primaries]:
            await self._connections.pop(name).close()

    def _connection(self, key: str) -> PipelinedConnection:
        """The connection to the Redis that holds `key`: the one Redis, or its shard's primary."""
        node = None if self._cluster is None else self._cluster.get_node_from_key(key)
        name = "" if node is None else node.name
        connection = self._connections.get(name)
        if connection is None:
            settings = node or cast(Redis, self._redis).connection_pool
            on_stall = None if self._cluster is None else functools.partial(
                self._stalled, self._cluster, name)
            connection = self._connections[name] = PipelinedConnection(
                Endpoint.of(settings), COMMAND_TIMEOUT, prologue=self._loads, on_stall=on_stall)
        return connection
