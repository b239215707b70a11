"""Receiving room channels from a Redis Cluster: sharded Pub/Sub, one connection per shard.

A room's channel is a shard channel in the room's slot (node.backends.redis.support.RedisKeys), so
`SSUBSCRIBE` goes to the primary that owns the slot and a publication never crosses the
cluster bus to other shards. This node keeps one connection to each primary that owns
one of its rooms.

When a shard connection fails (its primary died and a replica takes over) or Redis takes a
channel away (`SUNSUBSCRIBE` pushed when its slot moved), the channel's room is lost: the
node reloads the slot map, subscribes the room on its owner now, and then tells the hub,
which repairs any gap from history. The node is not ready while it has a room it cannot
receive.

redis-py's ClusterPubSub does the routing too, but reads its shard connections in turn with
a timeout each (a poll, not a wake-up per message) and re-subscribes a failed shard on the
same address; what it lacks here is a reader per shard and rerouting on failure.
"""

from __future__ import annotations

import asyncio
import logging

from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ConnectionError, RedisError

from node.backends.errors import Unavailable
from node.backends.redis.connection import Endpoint, PushConnection
from node.backends.redis.subscriber import Channels, Confirmations
from node.backends.redis.support import COMMAND_TIMEOUT, translate_errors
from node.background import Background
from node.backoff import Backoff

log = logging.getLogger("node.backends.broker")


class Shard:
    """The subscriber connection to one primary: opened on the first subscribe, read until it
    fails, then the subscriber is told (a failed shard is never reused: its channels are
    routed anew)."""

    def __init__(self, node: ClusterNode, owner: ShardedSubscriber) -> None:
        self.name = node.name
        self.channels: set[bytes] = set()
        self._owner = owner
        self._endpoint = Endpoint.of(node)
        self._connection: PushConnection | None = None
        self._opening = asyncio.Lock()
        self._confirmations = Confirmations()
        self._watcher: asyncio.Task[None] | None = None

    async def subscribe(self, channel: bytes) -> None:
        connection = await self._connected()
        await self._confirmations.subscribe(channel, connection, b"SSUBSCRIBE")
        self.channels.add(channel)

    async def unsubscribe(self, channel: bytes) -> None:
        self.channels.discard(channel)
        if self._connection is not None:
            self._connection.send(b"SUNSUBSCRIBE", channel)

    async def close(self) -> None:
        if self._watcher is not None and self._watcher is not asyncio.current_task():
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._connection is not None:
            self._connection.close()

    async def _connected(self) -> PushConnection:
        async with self._opening:
            if self._connection is None:
                self._connection = await PushConnection.open(self._endpoint, self._on_push)
                self._watcher = asyncio.create_task(self._watch(self._connection),
                                                    name=f"redis-shard-{self.name}")
            return self._connection

    async def _watch(self, connection: PushConnection) -> None:
        try:
            await connection.watch()
        except Exception:  # a bug below us: the connection's state is unknown
            log.exception("watching redis shard %s failed", self.name)
            connection.close()
        self._owner.shard_failed(self, ConnectionError(f"connection to {self.name} lost"))

    def _on_push(self, push: list[Any]) -> None:
        kind, channel = push[0], push[1]
        if kind == b"smessage":
            self._owner.deliver(push[2], channel)
        elif kind == b"ssubscribe":
            self._confirmations.confirm(channel)
        elif kind == b"sunsubscribe" and channel in self.channels:
            self.channels.discard(channel)
            self._owner.channel_lost(channel)


class ShardedSubscriber:
    """Room channels on a Redis Cluster, each subscribed on the primary that owns it."""

    def __init__(self, cluster: redis.RedisCluster, channels: Channels) -> None:
        self._cluster = cluster
        self._channels = channels
        self._shards: dict[str, Shard] = {}
        self._owners: dict[bytes, Shard] = {}
        self._lost: set[bytes] = set()  # wanted, but on no live shard
        # The shard that failed last: a reroute asks it for the slot map last, so that it
        # does not wait out a connect to a primary cut off (holding the slot map's lock,
        # which the publishing side's failover watch needs too).
        self._failed: str | None = None
        self._started = False
        self._repairing: asyncio.Task[None] | None = None
        self._closing = Background()

    @property
    def ready(self) -> bool:
        return self._started and not self._lost

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self._cluster.initialize(), COMMAND_TIMEOUT)
            self._started = True
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("redis cluster unreachable at start (%s); retrying in the background",
                        exc)
            self._repair()

    async def close(self) -> None:
        if self._repairing is not None:
            self._repairing.cancel()
            await asyncio.gather(self._repairing, return_exceptions=True)
        shards = list(self._shards.values())
        self._shards.clear()
        await asyncio.gather(*(shard.close() for shard in shards), *self._closing,
                             return_exceptions=True)

    async def subscribe(self, channel: bytes) -> None:
        if not self._started:
            raise Unavailable("redis cluster unreachable")
        await self._subscribe_on_owner(channel)

    async def unsubscribe(self, channel: bytes) -> None:
        self._lost.discard(channel)
        shard = self._owners.pop(channel, None)
        if shard is None:
            return
        await shard.unsubscribe(channel)
        await self._close_if_idle(shard)

    async def _close_if_idle(self, shard: Shard) -> None:
        """A shard connection without rooms goes: the next room there opens a new one."""
        if not shard.channels and self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
            await shard.close()

    @translate_errors
    async def _subscribe_on_owner(self, channel: bytes) -> None:
        node = self._cluster.get_node_from_key(channel.decode())
        if node is None:
            raise Unavailable("no Redis Cluster node serves the room's slot")
        shard = self._shards.get(node.name)
        if shard is None:
            shard = self._shards[node.name] = Shard(node, self)
        await shard.subscribe(channel)
        self._owners[channel] = shard

    # What shards report.

    def deliver(self, data: bytes, channel: bytes) -> None:
        self._channels.deliver(data, channel)

    def shard_failed(self, shard: Shard, exc: Exception) -> None:
        """A shard connection failed: all its rooms are lost until routed anew."""
        log.warning("redis shard %s lost (%s): rerouting %d rooms", shard.name, exc,
                    len(shard.channels))
        if self._shards.get(shard.name) is shard:
            del self._shards[shard.name]
        self._failed = shard.name
        for channel in shard.channels:
            self._owners.pop(channel, None)
            self._lost.add(channel)
        self._closing.spawn(shard.close(), "redis shard close")
        self._repair()

    def channel_lost(self, channel: bytes) -> None:
        """Redis took a channel away (its slot moved): route it anew."""
        log.info("redis moved %r; rerouting", channel)
        shard = self._owners.pop(channel, None)
        self._lost.add(channel)
        if shard is not None:
            self._closing.spawn(self._close_if_idle(shard), "redis shard close")
        self._repair()

    def primary_replaced(self, name: str) -> None:
        """The cluster failed the primary `name` over (the publishing side saw it): its rooms
        are routed anew now, and a reroute still waiting on a connection to it starts over
        with the new slot map instead of waiting out the connect timeout."""
        rerouting = self._repairing is not None and not self._repairing.done()
        if self._repairing is not None and rerouting:
            self._repairing.cancel()
            self._repairing = None
        shard = self._shards.get(name)
        if shard is not None:
            self.shard_failed(shard, ConnectionError(f"{name} was failed over"))
        elif rerouting:
            self._repair()

    def _repair(self) -> None:
        if self._repairing is None or self._repairing.done():
            self._repairing = asyncio.create_task(self._reroute(), name="redis-reroute")

    async def _reroute(self) -> None:
        """Reload the slot map and subscribe every lost room on its owner now, with backoff
        until all are; then the hub repairs what was missed meanwhile."""
        backoff = Backoff()
        while not self._started or self._lost:
            try:
                await self._cluster.nodes_manager.initialize(last_failed_node_name=self._failed)
                self._started = True
                wanted = self._channels.wanted_channels()
                for channel in list(self._lost):
                    if channel in wanted:
                        await self._subscribe_on_owner(channel)
                    self._lost.discard(channel)
            except (RedisError, OSError, Unavailable) as exc:
                log.debug("rerouting failed: %s", exc)
                await asyncio.sleep(backoff.next_delay())
            except Exception:  # a bug below us must not leave rooms unserved for good
                log.exception("rerouting failed; retrying")
                await asyncio.sleep(backoff.next_delay())
        log.info("redis cluster subscriptions complete")
        await self._channels.reconnected()
