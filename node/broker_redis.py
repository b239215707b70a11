"""The Redis broker: one Pub/Sub channel per room (a shard channel in a Redis Cluster);
history and seq in one atomic script on the room's keys."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError, ClusterDownError, ConnectionError, MovedError, NoScriptError, RedisError,
    TryAgainError,
)

from node import envelope
from node.background import Background
from node.broker import BrokerEvents, BudgetSpent, HistoryWindow
from node.ratelimit import Budget
from node.redis_support import (
    LUA_BUDGET, Client, RedisKeys, connect, node_client, publish_command, translate_errors,
)
from node.subscriber_cluster import ShardedSubscriber
from node.subscriber_redis import ChannelSubscriber, Subscriber

log = logging.getLogger("node.broker")

# KEYS: seq, history, epoch (one slot: the room's). ARGV: message template, history
# capacity, channel, room, a fresh epoch, publish command, the newest seq the node saw.
# Assigns the next seq, closes the template with it, stores it and publishes its envelope
# (node.envelope) atomically. Returns the seq.
PUBLISH_MESSAGE = envelope.LUA + """
local seq = redis.call('INCR', KEYS[1])
if seq <= tonumber(ARGV[7]) then  -- Redis lost messages the node saw: a new incarnation,
  seq = tonumber(ARGV[7]) + 1     -- whose history starts here (what survived has a gap)
  redis.call('SET', KEYS[1], seq)
  redis.call('SET', KEYS[3], ARGV[5])
  redis.call('DEL', KEYS[2])
elseif seq == 1 then
  redis.call('SET', KEYS[3], ARGV[5], 'NX')  -- a new (or lost) history
end
local payload = close({ARGV[1]}, {seq})
redis.call('ZADD', KEYS[2], seq, payload)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[2]) + 1))
redis.call(ARGV[6], ARGV[3], envelope(ARGV[4], seq, '', payload, 0))
return seq
"""

# KEYS: budget keys (cluster-wide: one slot). ARGV: "limit window-ms slice ..." (one
# argument: every argument costs redis-py an encoding). Takes a slice of every budget, or
# nothing: returns {0, grants...}, or {position} of a spent budget.
TAKE_BUDGETS = LUA_BUDGET + """
local limits, windows, slices = {}, {}, {}
for limit, window, slice in string.gmatch(ARGV[1], '(%d+) (%d+) (%d+)') do
  table.insert(limits, tonumber(limit))
  table.insert(windows, window)
  table.insert(slices, tonumber(slice))
end
local spent, grants = take(KEYS, limits, windows, slices)
if spent > 0 then return {spent} end
return {0, unpack(grants)}
"""

# KEYS: seq, history, epoch. ARGV: how many of the newest messages, or '' for all after
# ARGV[2]; a fresh epoch for a room without one. Returns {epoch, last seq, first seq kept,
# messages}.
READ_HISTORY = """
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local messages
if ARGV[1] ~= '' then
  messages = redis.call('ZRANGE', KEYS[2], -tonumber(ARGV[1]), -1)
else
  messages = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf')
end
return {redis.call('GET', KEYS[3]), last, tonumber(oldest[2] or (last + 1)), messages}
"""

SLICES = 8  # a node takes a budget from Redis an eighth of its limit at a time


class Ledger:
    """Budget this node took from Redis and has not spent yet, by budget window.

    A message is charged here while the node holds some of its budgets; only otherwise does
    the node take a slice (an eighth of the limit) from Redis before publishing. Most
    publishes then carry no budget work at all: counting every message in
    Redis cost the fan-out a sixth of its top rate. While a slice is on its way, other
    messages of the budget take one unit each, so concurrent senders never take more than
    one slice per node. The price: a user or address spread over N nodes may exceed a
    window's limit by what the other nodes hold, at most N - 1 slices.
    """

    def __init__(self) -> None:
        self._credit: dict[str, int] = {}
        self._pending: set[str] = set()  # keys whose slice is on its way

    def charge(self, key: str, budget: Budget) -> int:
        """0 when charged here, else how much the publish should take from Redis."""
        credit = self._credit.get(key, 0)
        if credit > 0:
            self._credit[key] = credit - 1
            return 0
        if key in self._pending:
            return 1
        self._pending.add(key)
        return max(1, budget.limit // SLICES)

    def refund(self, keys: list[str]) -> None:
        for key in keys:
            self._credit[key] = self._credit.get(key, 0) + 1

    def settle(self, key: str, asked: int, granted: int) -> None:
        """Redis granted `granted` of the `asked` (nothing when the publish failed); one of
        them paid for the message at hand."""
        if asked > 1:
            self._pending.discard(key)
        if len(self._credit) > 4096:  # windows end: forgetting credit only costs a trip
            self._credit.clear()
        if granted > 1:
            self._credit[key] = self._credit.get(key, 0) + granted - 1


@functools.lru_cache(maxsize=4096)
def _limits(asks: tuple[tuple[Budget, int], ...]) -> bytes:
    """Budget limits and what to take, as the publish script reads them, encoded once."""
    return " ".join(f"{b.limit} {int(b.window * 1000)} {take}" for b, take in asks).encode()


Call = tuple[list[str], list[Any]]  # a script's keys and arguments

# Replies after which a call runs again alone, through the script (which loads it when Redis
# lost it) on the client (which follows the slot map, reloading it when it changed).
RUN_ALONE: tuple[type[Exception], ...] = (NoScriptError, MovedError, AskError, TryAgainError,
                                          ClusterDownError)


class PublishPipeline:
    """Messages published in the same loop iteration go to Redis as one pipeline: one write
    and one read for all of them instead of a round trip each (auto-pipelining, as in
    ioredis). Redis runs them in arrival order; each caller gets its own seq or error.

    On a Redis Cluster there is a pipeline per shard (redis-py's cluster pipeline refuses
    scripts), on a connection of this node's own to each primary; a call the shard no longer
    serves, and every call of a shard whose connection failed, runs again alone, in order."""

    def __init__(self, redis: Client, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        # A cluster's shard that failed is replaced by its replica: its calls run again
        # alone on the reloaded slot map. One Redis that failed would fail them again.
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self._run_alone = RUN_ALONE + ((ConnectionError, OSError) if self._cluster else ())
        self._queued: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending = Background()
        self._shards: dict[str, Redis] = {}

    async def publish(self, keys: list[str], args: list[Any]) -> Any:
        """The script's reply for this call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((keys, args, future))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return await future

    async def close(self) -> None:
        for client in self._shards.values():
            await client.aclose()

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        self._sending.spawn(self._send(batch))

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]
                    ) -> None:
        try:
            results = await self._run([(keys, args) for keys, args, _ in batch])
        except Exception as exc:  # every caller hears of it, whatever it is
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results):
            if future.done():
                continue  # its caller gave up waiting
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _run(self, calls: list[Call]) -> list[Any]:
        if len(calls) == 1:
            return [await self._alone(calls[0])]
        results: list[Any] = [None] * len(calls)
        groups = self._by_shard(calls)
        if len(groups) == 1:  # one Redis: no task per batch
            await self._run_on(*groups[0], calls, results)
        else:
            await asyncio.gather(*(self._run_on(client, indexes, calls, results)
                                   for client, indexes in groups))
        for index, result in enumerate(results):
            if isinstance(result, self._run_alone):
                results[index] = await self._alone(calls[index])
        return results

    async def _alone(self, call: Call) -> Any:
        try:
            return await self._script(keys=call[0], args=call[1])
        except (RedisError, OSError) as exc:
            return exc

    async def _run_on(self, client: Client, indexes: list[int], calls: list[Call],
                      results: list[Any]) -> None:
        try:
            async with client.pipeline(transaction=False) as pipe:
                for index in indexes:
                    keys, args = calls[index]
                    pipe.evalsha(self._script.sha, len(keys), *keys, *args)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            replies = [exc] * len(indexes)
        for index, reply in zip(indexes, replies, strict=True):
            results[index] = reply

    def _by_shard(self, calls: list[Call]) -> list[tuple[Client, list[int]]]:
        """The calls' indexes by the client that runs them: one for a single Redis, the
        owning primary's for each shard of a Redis Cluster."""
        if self._cluster is None:
            return [(self._redis, list(range(len(calls))))]
        groups: dict[str, tuple[Client, list[int]]] = {}
        for index, (keys, _) in enumerate(calls):
            node = self._cluster.get_node_from_key(keys[0])
            if node.name not in groups:
                groups[node.name] = (self._shard(node), [])
            groups[node.name][1].append(index)
        return list(groups.values())

    def _shard(self, node: ClusterNode) -> Redis:
        client = self._shards.get(node.name)
        if client is None:
            client = self._shards[node.name] = node_client(node)
        return client


class RedisBroker:
    """Publishes through a connection pool; receives through a subscriber: one connection
    to a single Redis, one per shard of a Redis Cluster."""

    def __init__(self, url: str, prefix: str, node_id: str, capacity: int,
                 cluster: bool = False) -> None:
        self._redis = connect(url, cluster)
        self._keys = RedisKeys(prefix)
        self._publish = publish_command(cluster).encode()  # encoded once: the hot path
        self._capacity = capacity
        self._ledger = Ledger()
        self._publisher = PublishPipeline(self._redis,
                                          self._redis.register_script(PUBLISH_MESSAGE))
        self._take_budgets = self._redis.register_script(TAKE_BUDGETS)
        self._read_history = self._redis.register_script(READ_HISTORY)
        self._epoch_prefix = uuid.uuid4().hex[:16]
        self._epochs = itertools.count()
        self._events: BrokerEvents | None = None
        self._subscriber: Subscriber = (
            ShardedSubscriber(self._redis, self) if isinstance(self._redis, RedisCluster)
            else ChannelSubscriber(self._redis, self._keys.node_channel(node_id), self))

    @property
    def ready(self) -> bool:
        return self._subscriber.ready

    async def start(self, events: BrokerEvents) -> None:
        self._events = events
        await self._subscriber.start()

    async def close(self) -> None:
        await self._subscriber.close()
        await self._publisher.close()
        await self._redis.aclose()

    async def subscribe(self, room: str) -> None:
        await self._subscriber.subscribe(self._keys.channel(room).encode())

    async def unsubscribe(self, room: str) -> None:
        await self._subscriber.unsubscribe(self._keys.channel(room).encode())

    # Channels: what the subscriber serves.

    def deliver(self, data: bytes, channel: bytes) -> None:
        if self._events is None:
            return
        try:
            self._events.publication(envelope.unpack(data))
        except Exception:
            log.exception("dropping an undeliverable envelope from %r", channel)

    def wanted_channels(self) -> set[bytes]:
        rooms = self._events.wanted_rooms() if self._events is not None else ()
        return {self._keys.channel(room).encode() for room in rooms}

    async def reconnected(self) -> None:
        if self._events is not None:
            await self._events.reconnected()

    @translate_errors
    async def publish_message(self, room: str, template: bytes, budgets: Sequence[Budget],
                              seen: int) -> int:
        charged, asks = self._charge(budgets)
        grants: list[int] = [0] * len(asks)
        try:
            if asks:
                grants = await self._take(asks)
            return int(await self._publisher.publish(
                [self._keys.seq(room), self._keys.history(room), self._keys.epoch(room)],
                [template, self._capacity, self._keys.channel(room), room, self._fresh_epoch(),
                 self._publish, seen]))
        except BaseException:
            self._ledger.refund(charged)
            raise
        finally:
            for (key, _, take), granted_now in zip(asks, grants, strict=True):
                self._ledger.settle(key, take, granted_now)

    async def _take(self, asks: list[tuple[str, Budget, int]]) -> list[int]:
        """Take slices of the budgets from Redis: what each granted, or BudgetSpent."""
        spent, *granted = await self._take_budgets(
            keys=[self._keys.budget(key) for key, _, _ in asks],
            args=[_limits(tuple((budget, take) for _, budget, take in asks))])
        if spent:
            raise BudgetSpent(asks[spent - 1][1])
        return [int(n) for n in granted]

    def _charge(self, budgets: Sequence[Budget]
                ) -> tuple[list[str], list[tuple[str, Budget, int]]]:
        """Charge what the ledger holds; the rest goes to Redis: (key, budget, to take)."""
        charged: list[str] = []
        asks: list[tuple[str, Budget, int]] = []
        now = time.time()
        for budget in budgets:
            key = budget.key(now)
            take = self._ledger.charge(key, budget)
            if take:
                asks.append((key, budget, take))
            else:
                charged.append(key)
        return charged, asks

    def _fresh_epoch(self) -> str:
        """Unique per call, cheaply: only a room's first message uses it."""
        return f"{self._epoch_prefix}{next(self._epochs):x}"

    @translate_errors
    async def history(self, room: str, limit: int, after: int | None = None) -> HistoryWindow:
        epoch, last, first, messages = await self._read_history(
            keys=[self._keys.seq(room), self._keys.history(room), self._keys.epoch(room)],
            args=["" if after is not None else limit, after or 0, uuid.uuid4().hex])
        return HistoryWindow(list(messages), int(last), epoch.decode(), int(first))
