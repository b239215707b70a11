"""Receiving room channels from a Redis Cluster: sharded Pub/Sub, one connection per shard.

A room's channel is a shard channel in the room's slot (node.redis_support.RedisKeys), so
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

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import RedisError

from node.background import Background
from node.backoff import Backoff
from node.errors import Unavailable
from node.redis_support import COMMAND_TIMEOUT, node_client, translate_errors
from node.subscriber_redis import Channels, Confirmations

log = logging.getLogger("node.broker")


class Shard:
    """The subscriber connection to one primary: reads until it fails, then tells the
    subscriber and ends (a failed shard is never reused: its channels are routed anew)."""

    def __init__(self, node: ClusterNode, owner: ShardedSubscriber) -> None:
        self.name = node.name
        self.channels: set[bytes] = set()
        self._owner = owner
        self._client = node_client(node)
        self._pubsub = self._client.pubsub()
        self._confirmations = Confirmations()
        self._reader: asyncio.Task[None] | None = None

    async def subscribe(self, channel: bytes) -> None:
        await self._confirmations.subscribe(channel, self._ssubscribe)
        self.channels.add(channel)

    async def _ssubscribe(self, channel: bytes) -> None:
        await self._pubsub.ssubscribe(channel)
        if self._reader is None:  # read only once subscribed: there is a connection then
            self._reader = asyncio.create_task(self._read(), name=f"redis-shard-{self.name}")

    async def unsubscribe(self, channel: bytes) -> None:
        self.channels.discard(channel)
        try:
            await self._pubsub.sunsubscribe(channel)
        except (RedisError, OSError) as exc:
            log.debug("sunsubscribe %r on %s failed: %s", channel, self.name, exc)

    async def close(self) -> None:
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._pubsub.aclose()
        await self._client.aclose()

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: the connection's state is unknown
                self._owner.shard_failed(self, exc)
                return
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: dict[str, object]) -> None:
        kind, channel, data = message["type"], message["channel"], message["data"]
        if kind == "smessage":
            self._owner.deliver(data, channel)  # type: ignore[arg-type]
        elif kind == "ssubscribe":
            self._confirmations.confirm(channel)  # type: ignore[arg-type]
        elif kind == "sunsubscribe" and channel in self.channels:
            self.channels.discard(channel)  # type: ignore[arg-type]
            self._owner.channel_lost(channel)  # type: ignore[arg-type]


class ShardedSubscriber:
    """Room channels on a Redis Cluster, each subscribed on the primary that owns it."""

    def __init__(self, cluster: redis.RedisCluster, channels: Channels) -> None:
        self._cluster = cluster
        self._channels = channels
        self._shards: dict[str, Shard] = {}
        self._owners: dict[bytes, Shard] = {}
        self._lost: set[bytes] = set()  # wanted, but on no live shard
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
        node = self._cluster.get_node_from_key(channel)
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
        for channel in shard.channels:
            self._owners.pop(channel, None)
            self._lost.add(channel)
        self._closing.spawn(shard.close())
        self._repair()

    def channel_lost(self, channel: bytes) -> None:
        """Redis took a channel away (its slot moved): route it anew."""
        log.info("redis moved %r; rerouting", channel)
        shard = self._owners.pop(channel, None)
        self._lost.add(channel)
        if shard is not None:
            self._closing.spawn(self._close_if_idle(shard))
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
                await self._cluster.nodes_manager.initialize()
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
