"""The Redis broker: one Pub/Sub channel per room, history and seq in one atomic script."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from node import envelope
from node.backoff import Backoff
from node.broker import BrokerEvents, BudgetSpent, HistoryWindow
from node.ratelimit import Budget
from node.redis_support import (
    COMMAND_TIMEOUT, LUA_BUDGET, RedisKeys, connect, translate_errors,
)

log = logging.getLogger("node.broker")

# KEYS: seq, history, epoch, then budget keys. ARGV: message template, history capacity,
# channel, room, a fresh epoch, then "limit window-ms slice ..." for the budgets (one
# argument: every argument costs redis-py an encoding on the hottest path).
# Takes a slice of every budget, assigns the next seq, closes the template with it, stores it
# and publishes its envelope (node.envelope) atomically. Returns the seq; with budgets,
# {seq, grants...}, or {-position} of a spent budget (nothing done).
PUBLISH_MESSAGE = LUA_BUDGET + envelope.LUA + """
local grants = nil
if #KEYS > 3 then
  local limits, windows, slices = {}, {}, {}
  for limit, window, slice in string.gmatch(ARGV[6], '(%d+) (%d+) (%d+)') do
    table.insert(limits, tonumber(limit))
    table.insert(windows, window)
    table.insert(slices, tonumber(slice))
  end
  local spent
  spent, grants = take({unpack(KEYS, 4)}, limits, windows, slices)
  if spent > 0 then return {-spent} end
end
local seq = redis.call('INCR', KEYS[1])
if seq == 1 then redis.call('SET', KEYS[3], ARGV[5], 'NX') end  -- a new (or lost) history
local payload = close({ARGV[1]}, {seq})
redis.call('ZADD', KEYS[2], seq, payload)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[2]) + 1))
redis.call('PUBLISH', ARGV[3], envelope(ARGV[4], seq, '', payload, 0))
if grants then return {seq, unpack(grants)} end
return seq
"""

SLICES = 8  # a node takes a budget from Redis an eighth of its limit at a time


class Ledger:
    """Budget this node took from Redis and has not spent yet, by budget window.

    A message is charged here while the node holds some of its budgets; only otherwise does
    the publish script take a slice (an eighth of the limit) from Redis, atomically with the
    message. Most publishes then carry no budget work at all: counting every message in
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


class PublishPipeline:
    """Messages published in the same loop iteration go to Redis as one pipeline: one write
    and one read for all of them instead of a round trip each (auto-pipelining, as in
    ioredis). Redis runs them in arrival order; each caller gets its own seq or error."""

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._queued: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def publish(self, keys: list[str], args: list[Any]) -> Any:
        """The script's reply for this call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((keys, args, future))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]
                    ) -> None:
        try:
            results = await self._run([(keys, args) for keys, args, _ in batch])
        except (RedisError, OSError) as exc:
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results):
            if future.done():
                continue  # its caller gave up waiting
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _run(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        if len(calls) == 1:
            keys, args = calls[0]
            return [await self._script(keys=keys, args=args)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            if isinstance(result, NoScriptError):  # Redis lost its scripts: load, run alone
                keys, args = calls[index]
                results[index] = await self._script(keys=keys, args=args)
        return results


class RedisBroker:
    """Publishes through a connection pool and receives on one subscriber connection.

    The subscriber survives Redis outages and any failure of its own: it reconnects with
    capped, jittered backoff, subscribes the rooms the hub wants, and tells the hub.
    """

    def __init__(self, url: str, prefix: str, node_id: str, capacity: int) -> None:
        self._redis = connect(url)
        self._keys = RedisKeys(prefix)
        self._node_id = node_id
        self._capacity = capacity
        self._ledger = Ledger()
        self._publisher = PublishPipeline(self._redis,
                                          self._redis.register_script(PUBLISH_MESSAGE))
        self._epoch_prefix = uuid.uuid4().hex[:16]
        self._epochs = itertools.count()
        self._pubsub = self._redis.pubsub()
        self._events: BrokerEvents | None = None
        self._listener: asyncio.Task[None] | None = None
        self._connected = False
        self._closing = False
        self._connected_once = asyncio.Event()
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        return self._connected

    async def start(self, events: BrokerEvents) -> None:
        """Start the subscriber; waits (boundedly) for Redis so that a fresh node is ready."""
        self._events = events
        self._listener = asyncio.create_task(self._listen(), name="redis-subscriber")
        try:
            await asyncio.wait_for(self._connected_once.wait(), COMMAND_TIMEOUT)
        except TimeoutError:
            log.warning("redis unreachable at start; retrying in the background")

    async def close(self) -> None:
        self._closing = True
        pending = [*self._tasks, *([self._listener] if self._listener else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._pubsub.aclose()
        await self._redis.aclose()

    async def subscribe(self, room: str) -> None:
        await self._subscribe_confirmed(self._keys.channel(room).encode())

    async def unsubscribe(self, room: str) -> None:
        """Never fails: an unsubscribe lost to an outage is repaired on reconnect."""
        channel = self._keys.channel(room).encode()
        try:
            await self._pubsub.unsubscribe(channel)
        except (RedisError, OSError) as exc:
            log.debug("unsubscribe %r deferred to reconnect: %s", channel, exc)

    @translate_errors
    async def publish_message(self, room: str, template: bytes, budgets: Sequence[Budget]
                              ) -> int:
        keys = [self._keys.seq(room), self._keys.history(room), self._keys.epoch(room)]
        args: list[Any] = [template, self._capacity, self._keys.channel(room), room,
                           self._fresh_epoch()]
        charged, asks = self._charge(budgets)
        if asks:
            keys += [self._keys.budget(key) for key, _, _ in asks]
            args.append(_limits(tuple((budget, take) for _, budget, take in asks)))
        grants: list[int] = [0] * len(asks)
        try:
            reply = await self._publisher.publish(keys, args)
            if not asks:
                return int(reply)
            seq, *granted = reply
            if seq < 0:
                raise BudgetSpent(asks[-seq - 1][1])
            grants = [int(n) for n in granted]
            return int(seq)
        except BaseException:
            self._ledger.refund(charged)
            raise
        finally:
            for (key, _, take), granted_now in zip(asks, grants, strict=True):
                self._ledger.settle(key, take, granted_now)

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
        history = self._keys.history(room)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.epoch(room), uuid.uuid4().hex, nx=True)
            pipe.get(self._keys.epoch(room))
            pipe.get(self._keys.seq(room))
            pipe.zrange(history, 0, 0, withscores=True)
            if after is None:
                pipe.zrange(history, -limit, -1)
            else:
                pipe.zrangebyscore(history, f"({after}", "+inf")
            _, epoch, seq, oldest, messages = await pipe.execute()
        last = int(seq or 0)
        first = int(oldest[0][1]) if oldest else last + 1
        return HistoryWindow(list(messages), last, epoch.decode(), first)

    @translate_errors
    async def _subscribe_confirmed(self, channel: bytes) -> None:
        """Subscribe and wait for Redis to confirm, so no publication after this is missed."""
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        try:
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(confirmed, COMMAND_TIMEOUT)
        finally:
            self._confirmations.pop(channel, None)

    async def _listen(self) -> None:
        """Read the subscriber connection for ever, reconnecting after failures.

        The node's own channel is always subscribed, so the connection always has a
        subscription to re-establish and every reconnect is confirmed by a message.
        """
        own_channel = self._keys.node_channel(self._node_id)
        backoff = Backoff()
        while not self._closing:  # a flag too: redis-py can swallow a cancel
            try:
                if not self._pubsub.subscribed:
                    await self._pubsub.subscribe(own_channel)
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._set_connected(False, str(exc))
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception as exc:  # a bug below us must not end delivery for good
                log.exception("subscriber failed; reconnecting")
                self._set_connected(False, repr(exc))
                await self._pubsub.aclose()  # a fresh connection: the old one's state is unknown
                await asyncio.sleep(backoff.next_delay())
                continue
            if not self._connected:
                backoff.reset()
                self._set_connected(True, "subscriber connected")
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: dict[str, object]) -> None:
        kind, channel, data = message["type"], message["channel"], message["data"]
        if kind == "message" and self._events is not None:
            try:
                self._events.publication(envelope.unpack(data))  # type: ignore[arg-type]
            except Exception:
                log.exception("dropping an undeliverable envelope from %r", channel)
        elif kind == "subscribe":
            confirmed = self._confirmations.get(channel)  # type: ignore[arg-type]
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    def _set_connected(self, connected: bool, why: str) -> None:
        """Record a transition (logged once each way); a (re)connect re-announces state."""
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            log.info("redis connected")
            self._connected_once.set()
            self._background(self._reconnected())
        else:
            log.warning("redis unavailable: %s", why)

    async def _reconnected(self) -> None:
        """Subscribe exactly the rooms the hub wants, then tell it.

        redis-py re-subscribes the channels it knew; a subscribe or unsubscribe that failed
        during the outage is repaired here.
        """
        assert self._events is not None
        own = self._keys.node_channel(self._node_id).encode()
        wanted = {self._keys.channel(room).encode() for room in self._events.wanted_rooms()}
        current = set(self._pubsub.channels) - {own}
        try:
            if stale := current - wanted:
                await self._pubsub.unsubscribe(*stale)
            if missing := wanted - current:
                await self._pubsub.subscribe(*missing)
            await self._events.reconnected()
        except Exception:
            log.exception("re-announcing after a redis reconnect failed")

    def _background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
