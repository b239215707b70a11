"""The Redis broker: one Pub/Sub channel per room (a shard channel in a Redis Cluster);
history and seq in one atomic script on the room's keys."""

from __future__ import annotations

import functools
import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError, ResponseError

from node.backends import envelope
from node.backends.broker import (
    AlreadyStored, BrokerEvents, BudgetSpent, HistoryWindow, Idempotency, Muted,
)
from node.backends.errors import OutcomeUnknown, Unavailable
from node.backends.redis.connection import Endpoint, NotSent
from node.backends.redis.event_queue import Marks
from node.backends.redis.lua import lua_script
from node.backends.redis.script_pipeline import ScriptPipeline
from node.backends.redis.subscriber import ChannelSubscriber, Subscriber
from node.backends.redis.subscriber_cluster import ShardedSubscriber
from node.backends.redis.support import (
    COMMAND_TIMEOUT, Client, RedisKeys, hold_until, publish_command, translate_errors,
)
from node.ratelimit import Budget

log = logging.getLogger("node.backends.broker")

# KEYS: seq, history, epoch, history bytes, term, parent (one slot: the room's). ARGV: message
# template, history capacity, channel, room, a fresh epoch id, publish command, the newest seq
# the node saw, history capacity in bytes, the deadline (ms since the epoch), the epoch the
# node saw that seq in. Assigns the next
# seq, closes the template with it, stores it (the oldest going past either capacity, the
# newest always kept) and publishes its envelope (node.backends.envelope) atomically. Returns the
# seq, or -1 (nothing done) when it runs past its deadline: a request held up in the network lands
# after its node gave up on it, and must not be stored then (its sender was told otherwise).
#
# The history forks — a new epoch, named `<id>.<base>`, sharing seqs up to `base` with the
# one before, which it keeps as its parent — when this Redis cannot vouch for the seqs after
# `base`:
# - another node of the Redis Cluster than the one that numbered the room's last message
#   (`term`, its node id) numbers the next, and it was promoted since it started (its
#   `master_replid2` is set): a failover, after which the old primary may have acknowledged
#   messages this one never got, under the same seqs as this one's next (the history up to
#   here is whole). A restart keeps the node id; a slot moved to a node never promoted (its
#   keys move whole) only takes the term over. Only a Redis Cluster's shards (they publish
#   with SPUBLISH) keep a term: a single Redis has no replica to fail over to. The
#   replication ids are read only when the node id changed: reading them costs the script
#   about half again its Redis CPU (docs/performance-history.md);
# - the node saw seqs of this history that this Redis no longer has (a restart that lost the
#   newest writes): the room numbers on above them, in a history that starts here.
PUBLISH_MESSAGE = lua_script("publish_message", "envelope")

# KEYS: budget buckets (cluster-wide: one slot). ARGV: "limit window-ms slice ..." (one
# argument: every argument costs redis-py an encoding). Takes a slice of every budget, or
# nothing: returns {0, grants...}, or {position} of a spent budget.
TAKE_BUDGETS = lua_script("take_budgets", "budget")

# KEYS: seq, history, epoch, parent. ARGV: how many messages at most, the seqs they lie between
# ('' for no bound: after ARGV[2], before ARGV[3]), at most how many bytes of them ('' for no
# bound; the newest message always goes), a fresh epoch for a room without one. The newest
# first, so that a byte bound cuts the oldest. Returns {epoch, last seq, first seq kept,
# whether older messages than those returned are kept (1/0), messages oldest first, the
# epoch's parent (false for none)}.
READ_HISTORY = lua_script("read_history")
REPLACE_MESSAGE = lua_script("replace_message", "envelope")

SLICES = 8  # a node takes a budget from Redis an eighth of its limit at a time
# Seconds a publish may take to reach Redis; later, the script refuses it. A second short of
# the node's own wait (COMMAND_TIMEOUT), so that with node and Redis clocks within a second
# of each other, nothing lands after the node answered its sender.
PUBLISH_DEADLINE = COMMAND_TIMEOUT - 1.0


class Ledger:
    """Budget this node took from Redis and has not spent yet, by budget window (what a node
    took and did not spend in a window is forgotten: it never adds to a later burst).

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


@dataclass(frozen=True, slots=True)
class PublishCall:
    """One call of the publish script (publish_message.lua): its keys and arguments, in the
    order the script reads them (loadtest.script_cost makes the same calls)."""

    room: str
    template: bytes
    fresh_epoch: str  # the epoch a room's first message starts
    seen: int  # the newest seq of the room this node delivered, in `seen_epoch`
    seen_epoch: str
    deadline_ms: int  # past it (Redis's clock), the script refuses to run
    idempotency: Idempotency | None = None
    sender: str = ""  # the user id whose mute the script checks
    queued: bool = False  # the script queues the message for the webhooks

    def keys(self, keys: RedisKeys) -> list[str]:
        room = self.room
        return [keys.seq(room), keys.history(room), keys.epoch(room), keys.history_bytes(room),
                keys.term(room), keys.parent(room),
                keys.sent(room, "" if self.idempotency is None else self.idempotency.key),
                keys.mute(room, self.sender), *([keys.hooks(room)] if self.queued else [])]

    def args(self, keys: RedisKeys, publish: bytes, capacity: int, capacity_bytes: int
             ) -> list[Any]:
        window = ("" if self.idempotency is None
                  else str(max(1, round(self.idempotency.window * 1000))))
        return [self.template, capacity, keys.channel(self.room), self.room, self.fresh_epoch,
                publish, self.seen, capacity_bytes, self.deadline_ms, self.seen_epoch, window]


class RedisBroker:
    """Publishes through a connection pool; receives through a subscriber: one connection
    to a single Redis, one per shard of a Redis Cluster."""

    def __init__(self, redis: Client, prefix: str, node_id: str, capacity: int,
                 capacity_bytes: int, marks: Marks | None = None) -> None:
        self._redis = redis  # the node's, shared: one slot map follows a failover for all
        self._marks = marks  # the webhooks' queue's, when it takes messages or deletions
        self._keys = RedisKeys(prefix)
        self._publish = publish_command(redis).encode()  # encoded once: the hot path
        self._capacity = capacity
        self._capacity_bytes = capacity_bytes
        self._ledger = Ledger()
        self._publish_message = self._redis.register_script(PUBLISH_MESSAGE)
        self._take_budgets = self._redis.register_script(TAKE_BUDGETS)
        self._read_history = self._redis.register_script(READ_HISTORY)
        self._replace_message = self._redis.register_script(REPLACE_MESSAGE)
        self._epoch_prefix = uuid.uuid4().hex[:16]
        self._epochs = itertools.count()
        self._events: BrokerEvents | None = None
        sharded = ShardedSubscriber(redis, self) if isinstance(redis, RedisCluster) else None
        self._subscriber: Subscriber = sharded or ChannelSubscriber(
            Endpoint.of(cast(Redis, redis).connection_pool), self._keys.node_channel(node_id),
            self)
        self._scripts = ScriptPipeline(
            self._redis, (self._publish_message, self._take_budgets, self._read_history),
            on_failover=None if sharded is None else sharded.primary_replaced)

    @property
    def ready(self) -> bool:
        return self._subscriber.ready

    async def start(self, events: BrokerEvents) -> None:
        self._events = events
        await self._subscriber.start()

    async def close(self) -> None:
        await self._subscriber.close()
        await self._scripts.close()

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
                              seen: int, seen_epoch: str = "",
                              idempotency: Idempotency | None = None, sender: str = "") -> int:
        charged, asks = self._charge(budgets)
        grants: list[int] = [0] * len(asks)
        try:
            if asks:
                grants = await self._take(asks)
            return await self._publish_fenced(room, template, seen, seen_epoch, idempotency,
                                              sender)
        except (AlreadyStored, Muted):
            raise  # spent as a send is: resending, or sending while muted, is not free
        except BaseException:
            self._ledger.refund(charged)
            raise
        finally:
            for (key, _, take), granted_now in zip(asks, grants, strict=True):
                self._ledger.settle(key, take, granted_now)

    async def _publish_fenced(self, room: str, template: bytes, seen: int, seen_epoch: str,
                              idempotency: Idempotency | None, sender: str) -> int:
        """Run the publish script with a deadline: an answer is the truth, and so is no answer
        past the deadline (the script will not run any more), but without an answer the
        outcome is unknown (`OutcomeUnknown`). A publish that never left the node, or that
        Redis refused (out of memory), stored nothing: `Unavailable`. With an idempotency
        key the script may run twice (the second finds the key): a failed connection's call
        runs again on a fresh one instead of ending unknown."""
        queued = self._marks is not None and await self._marks.queues(
            room, self._marks.recorded.messages)
        deadline = int(time.time() * 1000 + PUBLISH_DEADLINE * 1000)
        call = PublishCall(room, template, self._fresh_epoch(), seen, seen_epoch, deadline,
                           idempotency, sender, queued)
        try:
            seq = int(await self._scripts.run(
                self._publish_message, call.keys(self._keys),
                call.args(self._keys, self._publish, self._capacity, self._capacity_bytes),
                repeatable=idempotency is not None))
        except (ResponseError, NotSent) as exc:
            raise Unavailable(f"the publish was refused or never sent: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise OutcomeUnknown(f"no answer to a publish: {exc}") from exc
        if seq == -1:
            raise Unavailable("the publish reached Redis past its deadline; nothing was stored")
        if seq == -2:
            raise Muted(room)
        if seq < 0:
            raise AlreadyStored(-3 - seq)
        return seq

    @translate_errors
    async def publish_event(self, room: str, payload: bytes) -> None:
        data = envelope.pack(envelope.Publication(room, envelope.UNSEQUENCED, payload))
        await self._redis.execute_command(self._publish.decode(), self._keys.channel(room),
                                          data)

    @translate_errors
    async def replace_message(self, room: str, seq: int, stored: bytes, replacement: bytes,
                              event: bytes) -> bool | None:
        queued = self._marks is not None and await self._marks.queues(
            room, self._marks.recorded.deletions)
        done = int(await self._replace_message(
            keys=[self._keys.history(room), self._keys.history_bytes(room),
                  *([self._keys.hooks(room)] if queued else [])],
            args=[seq, stored, replacement, event, self._publish, self._keys.channel(room),
                  room]))
        return None if done < 0 else bool(done)

    @translate_errors
    async def mute(self, room: str, user_id: str, until: float) -> None:
        await hold_until(self._redis, self._keys.mute(room, user_id), until)

    async def _take(self, asks: list[tuple[str, Budget, int]]) -> list[int]:
        """Take slices of the budgets from Redis: what each granted, or BudgetSpent."""
        spent, *granted = await self._scripts.run(
            self._take_budgets, [self._keys.budget(budget.bucket) for _, budget, _ in asks],
            [_limits(tuple((budget, take) for _, budget, take in asks))])
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
    async def history(self, room: str, limit: int, after: int | None = None,
                      before: int | None = None, max_bytes: int | None = None
                      ) -> HistoryWindow:
        epoch, last, first, more, messages, parent = await self._scripts.run(
            self._read_history,
            [self._keys.seq(room), self._keys.history(room), self._keys.epoch(room),
             self._keys.parent(room)],
            [limit, _bound(after), _bound(before), _bound(max_bytes), uuid.uuid4().hex])
        return HistoryWindow(list(messages), int(last), epoch.decode(), int(first),
                             more=bool(more), parent=(parent or b"").decode())


def _bound(value: int | None) -> int | str:
    return "" if value is None else value
