"""The webhooks' event queue in Redis: a stream per room, written by the room's own scripts.

A room's publish, deletion and membership scripts add their event to the room's stream
(`chat:{room}:hooks`, in the room's slot) in the same step that makes it: the queue has each
room's events in the room's order and loses none to a node dying between two steps. Before
such a script runs, its node marks the room in its partition's index (`Marks`); a mark is
removed only once it is older than any script that relied on it can still be about to run,
so no event is left where no deliverer looks. A deliverer keeps a cursor per room and
endpoint; events every endpoint has had are trimmed, and a drained stream is deleted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Any, cast

from node.backends.event_queue import (
    MARK_QUIET, DeadEvent, QueuedEvent, Recorded, partition_of,
)
from node.backends.redis.lua import lua_script
from node.backends.redis.support import Client, RedisKeys, translate_errors

HOOKS_MARK = lua_script("hooks_mark")
HOOKS_UNMARK = lua_script("hooks_unmark")
HOOKS_SETTLE = lua_script("hooks_settle")
HOOKS_LEASE = lua_script("hooks_lease")
RELEASE_LOCK = lua_script("release_lock")

# A node marks a room again after this many seconds even if it marked it before: a mark is
# removed only MARK_QUIET after it was made, so a publish (which runs within its deadline,
# 4 s) relying on a mark up to REMARK old always finds it still there.
REMARK = 10.0
RECENT_ROOMS = 100_000  # rooms a node remembers marking (forgotten all at once past it)


class Marks:
    """Marks rooms whose scripts are about to queue webhook events (the producers' side)."""

    def __init__(self, redis: Client, keys: RedisKeys, recorded: Recorded) -> None:
        self.recorded = recorded
        self._keys = keys
        self._mark = redis.register_script(HOOKS_MARK)
        self._recent: dict[str, float] = {}

    async def queues(self, room: str, wanted: bool) -> bool:
        """Mark the room when its next script is to queue an event (`wanted`, as
        `recorded` says of its kind); returns `wanted`."""
        if wanted:
            await self.mark(room)
        return wanted

    @translate_errors
    async def mark(self, room: str) -> None:
        """Mark the room before a script that queues its event runs."""
        now = time.monotonic()
        if now - self._recent.get(room, -REMARK) < REMARK:
            return
        await self._mark(keys=[self._keys.hook_rooms(partition_of(room))], args=[room])
        if len(self._recent) >= RECENT_ROOMS:
            self._recent.clear()
        self._recent[room] = now


def _event(entry: tuple[bytes, dict[bytes, bytes]]) -> QueuedEvent:
    entry_id, fields = entry
    event_id = entry_id.decode()
    return QueuedEvent(event_id, fields[b"p"], int(event_id.partition("-")[0]),
                       fields.get(b"i", b"").decode(), fields.get(b"e", b"").decode())


class RedisEventQueue:
    """The deliverers' side of the queue (node.backends.event_queue.EventQueue)."""

    def __init__(self, redis: Client, keys: RedisKeys, node_id: str, marks: Marks) -> None:
        self._redis = redis
        self._keys = keys
        self._node_id = node_id
        self._marks = marks
        self._unmark = redis.register_script(HOOKS_UNMARK)
        self._settle = redis.register_script(HOOKS_SETTLE)
        self._lease = redis.register_script(HOOKS_LEASE)
        self._release = redis.register_script(RELEASE_LOCK)

    @translate_errors
    async def lease(self, partition: int, ttl: float) -> bool:
        return bool(await self._lease(keys=[self._keys.hook_lease(partition)],
                                      args=[self._node_id, int(ttl * 1000)]))

    @translate_errors
    async def release(self, partition: int) -> None:
        await self._release(keys=[self._keys.hook_lease(partition)], args=[self._node_id])

    @translate_errors
    async def rooms(self, partition: int, offset: int, limit: int) -> list[tuple[str, int]]:
        found = await cast(Awaitable[list[tuple[bytes, float]]], self._redis.zrange(
            self._keys.hook_rooms(partition), offset, offset + limit - 1, withscores=True))
        return [(room.decode(), int(mark)) for room, mark in found]

    @translate_errors
    async def cursors(self, rooms: Sequence[str], endpoint: str) -> list[str]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.hget(self._keys.hook_cursors(room), endpoint)
            found: list[bytes | None] = await pipe.execute()
        return [cursor.decode() if cursor else "" for cursor in found]

    @translate_errors
    async def events(self, after: Sequence[tuple[str, str]], limit: int
                     ) -> list[list[QueuedEvent]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for room, cursor in after:
                pipe.xrange(self._keys.hooks(room), f"({cursor}" if cursor else "-", "+",
                            count=limit)
            found: list[list[Any]] = await pipe.execute()
        return [[_event(entry) for entry in entries] for entries in found]

    @translate_errors
    async def delivered(self, room: str, endpoint: str, event_id: str) -> None:
        await self._redis.hset(self._keys.hook_cursors(room), endpoint, event_id)

    @translate_errors
    async def bury(self, room: str, endpoint: str, dead: DeadEvent, keep: int) -> None:
        await self._redis.xadd(self._keys.hook_dead(endpoint), {
            "r": room, "i": dead.webhook_id, "p": dead.body, "t": dead.at_ms,
            "why": dead.reason}, maxlen=keep, approximate=False)

    @translate_errors
    async def settle(self, room: str, endpoints: Sequence[str], unmark: int | None) -> int:
        kept = int(await self._settle(
            keys=[self._keys.hooks(room), self._keys.hook_cursors(room)], args=list(endpoints)))
        if unmark is not None and kept == 0:
            await self._unmark(keys=[self._keys.hook_rooms(partition_of(room))],
                               args=[room, unmark, int(MARK_QUIET * 1000)])
        return kept

    @translate_errors
    async def kept(self, rooms: Sequence[str]) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.xlen(self._keys.hooks(room))
            lengths: list[int] = await pipe.execute()
        return sum(lengths)

    @translate_errors
    async def append(self, room: str, payload: bytes) -> None:
        await self._marks.mark(room)
        await self._redis.xadd(self._keys.hooks(room), {"p": payload})

    @translate_errors
    async def dead(self, endpoint: str, count: int) -> list[DeadEvent]:
        found = await cast(Awaitable[list[tuple[bytes, dict[bytes, bytes]]]], self._redis.xrange(
            self._keys.hook_dead(endpoint), count=count))
        return [DeadEvent(entry_id.decode(), fields[b"r"].decode(), fields[b"i"].decode(),
                          fields[b"p"], int(fields[b"t"]), fields[b"why"].decode())
                for entry_id, fields in found]

    async def replay(self, endpoint: str, count: int) -> int:
        replayed = 0
        for dead in await self.dead(endpoint, count):
            await self._requeue(endpoint, dead)
            replayed += 1
        return replayed

    @translate_errors
    async def _requeue(self, endpoint: str, dead: DeadEvent) -> None:
        """Back into its room's queue for the endpoint alone, then out of the dead letters
        (a crash between the two replays it twice: its webhook id lets the receiver see)."""
        await self._marks.mark(dead.room)
        await self._redis.xadd(self._keys.hooks(dead.room), {
            "p": dead.body, "i": dead.webhook_id, "e": endpoint})
        await self._redis.xdel(self._keys.hook_dead(endpoint), dead.id)
