"""Delivers the queued room events to the webhook endpoints: at least once, each room's in
its order, signed, from whichever live nodes hold the partitions' leases.

A node holds at most its share of the partitions (node.backends.event_queue.PARTITIONS over
the live nodes); a lease not renewed expires and another node takes it, and delivers from
the cursors the last holder saved (what it sent and did not record is sent again: receivers
deduplicate by webhook id). A holder that could not renew in time stops sending before its
lease can have passed to another. Each (room, endpoint) goes at its own pace: a receiver
that fails one room's event holds back that room's later events for it alone, retried with
exponential backoff and full jitter until the event is older than the maximum age; then it
goes to the endpoint's dead letters and the room goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from node.backends.errors import Unavailable
from node.backends.event_queue import (
    MARK_QUIET, PARTITIONS, DeadEvent, EventQueue, QueuedEvent,
)
from node.background import Background
from node.hooks.caller import Caller, HookFailed
from node.hooks.endpoints import Endpoint
from node.hooks.events import webhooks

log = logging.getLogger("node.hooks.delivery")

LEASE_TTL = 5.0  # seconds a partition's lease lasts unless renewed
LEASE_RENEW = 1.0  # seconds between renewals (and looks for partitions to take)
POLL = 0.1  # seconds between two looks at a partition's rooms
ROOMS_PER_ROUND = 1000  # rooms of a partition looked at in one round (the next round goes on)
BATCH = 64  # events of a room read at once
FIRST_RETRY = 0.5  # seconds: the backoff's first step
DEPTH_EVERY = 5.0  # seconds between two counts of the queued events
OUTAGE_PAUSE = 1.0  # seconds a partition waits after Redis failed it


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """The part of the node's settings webhook delivery uses."""

    endpoints: tuple[Endpoint, ...]
    timeout: float  # seconds one POST may take
    max_age: float  # seconds an event is retried for
    max_backoff: float  # the longest wait between two tries
    concurrency: int  # rooms delivered at once, per endpoint
    dead_max: int  # dead letters kept per endpoint


@dataclass(slots=True)
class _Retry:
    attempts: int
    next_at: float  # monotonic
    oldest_ms: int  # when the event held back happened


class Deliverer:
    """This node's share of the webhook deliveries."""

    def __init__(self, queue: EventQueue, caller: Caller, settings: DeliverySettings,
                 live_nodes: Callable[[], Awaitable[list[str]]]) -> None:
        self._queue = queue
        self._caller = caller
        self._settings = settings
        self._live_nodes = live_nodes
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._held_until: dict[int, float] = {}  # monotonic: the lease is surely ours before
        self._busy: set[tuple[str, str]] = set()  # (room, endpoint key) being delivered
        self._retries: dict[tuple[str, str], _Retry] = {}
        self._cursors: dict[tuple[str, str], str] = {}
        self._dirty: set[str] = set()  # rooms that delivered since their last settle
        self._sends = Background()
        self._rooms: dict[int, list[tuple[str, int]]] = {}  # each held partition's last look
        self.results: Counter[tuple[str, str]] = Counter()  # (endpoint url, ok/failed/dead)
        self.queued = 0  # events in the held partitions' queues, as last counted

    @property
    def partitions(self) -> int:
        return len(self._workers)

    def oldest(self, endpoint: Endpoint) -> float:
        """Seconds since the oldest event held back for the endpoint happened (0: none)."""
        held = [retry.oldest_ms for (_, key), retry in self._retries.items()
                if key == endpoint.key]
        return max(0.0, time.time() - min(held) / 1000) if held else 0.0

    async def run(self) -> None:
        """Keep this node's share of the leases, and deliver their rooms, until cancelled;
        a partition's worker that fails ends this (supervised: it starts again)."""
        counted = 0.0
        try:
            while True:
                await self._keep_leases()
                if time.monotonic() - counted >= DEPTH_EVERY:
                    counted = time.monotonic()
                    self.queued = await self._queue.kept(
                        [room for rooms in self._rooms.values() for room, _ in rooms])
                await asyncio.sleep(LEASE_RENEW)
        finally:
            await self._stop_workers()

    async def release(self) -> None:
        """Give this node's partitions up now (it stops): another node goes on at once.
        (Releasing one another node holds changes nothing.)"""
        await self._stop_workers()
        for partition in range(PARTITIONS):
            with contextlib.suppress(Unavailable):
                await self._queue.release(partition)

    async def _keep_leases(self) -> None:
        for partition, worker in list(self._workers.items()):
            if worker.done():
                worker.result()  # raises what ended it
        share = math.ceil(PARTITIONS / max(1, len(await self._live_nodes())))
        for partition in range(PARTITIONS):
            held = partition in self._workers
            if not held and len(self._workers) >= share:
                continue
            asked = time.monotonic()
            if await self._queue.lease(partition, LEASE_TTL):
                self._held_until[partition] = asked + LEASE_TTL - LEASE_RENEW
                if not held:
                    self._workers[partition] = asyncio.create_task(
                        self._partition(partition), name=f"webhooks {partition}")
            elif held:
                await self._drop(partition)
        for partition in sorted(self._workers)[share:]:  # more than its share: give back
            await self._drop(partition)
            await self._queue.release(partition)

    async def _drop(self, partition: int) -> None:
        self._held_until.pop(partition, None)
        self._rooms.pop(partition, None)
        worker = self._workers.pop(partition)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker

    async def _stop_workers(self) -> None:
        for partition in list(self._workers):
            await self._drop(partition)
        for send in list(self._sends):
            send.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)

    def _holds(self, partition: int) -> bool:
        return time.monotonic() < self._held_until.get(partition, 0.0)

    async def _partition(self, partition: int) -> None:
        offset = 0
        while True:
            if self._holds(partition):
                try:
                    rooms = await self._queue.rooms(partition, offset, ROOMS_PER_ROUND)
                    offset = offset + len(rooms) if len(rooms) == ROOMS_PER_ROUND else 0
                    self._rooms[partition] = rooms
                    await self._round(partition, rooms)
                except Unavailable as outage:
                    log.warning("webhook partition %d: %s", partition, outage)
                    await asyncio.sleep(OUTAGE_PAUSE)
            await asyncio.sleep(POLL)

    async def _round(self, partition: int, rooms: list[tuple[str, int]]) -> None:
        """Start delivering each room that has events for an endpoint; settle the rooms
        every endpoint has had everything of."""
        idle = {room for room, _ in rooms}
        for endpoint in self._settings.endpoints:
            for room in await self._start_sends(partition, [room for room, _ in rooms],
                                                endpoint):
                idle.discard(room)
        now_ms = time.time() * 1000
        keys = [endpoint.key for endpoint in self._settings.endpoints]
        for room, mark in rooms:
            old = mark <= now_ms - MARK_QUIET * 1000
            if room in idle and (room in self._dirty or old):
                self._dirty.discard(room)
                if await self._queue.settle(room, keys, mark if old else None) == 0:
                    self._forget(room)  # its queue and cursors are gone: the next starts anew

    async def _start_sends(self, partition: int, rooms: Sequence[str], endpoint: Endpoint
                           ) -> list[str]:
        """Rooms not idle for the endpoint: being delivered, held back, or started now."""
        key = endpoint.key
        now = time.monotonic()
        waiting = [room for room in rooms if (room, key) in self._busy
                   or now < self._retries.get((room, key), _Retry(0, 0.0, 0)).next_at]
        due = [room for room in rooms if room not in waiting]
        unknown = [room for room in due if (room, key) not in self._cursors]
        for room, cursor in zip(unknown, await self._queue.cursors(unknown, key), strict=True):
            self._cursors[(room, key)] = cursor
        batches = await self._queue.events([(room, self._cursors[(room, key)]) for room in due],
                                           BATCH) if due else []
        sending = sum(1 for _, busy_key in self._busy if busy_key == key)
        for room, batch in zip(due, batches, strict=True):
            if not batch:
                continue
            waiting.append(room)
            if sending < self._settings.concurrency:
                sending += 1
                self._busy.add((room, key))
                self._sends.spawn(self._deliver(partition, room, endpoint, batch),
                                  "webhook delivery")
        return waiting

    async def _deliver(self, partition: int, room: str, endpoint: Endpoint,
                       batch: list[QueuedEvent]) -> None:
        """The room's events for the endpoint, in order, until none is left, one fails, or
        the lease may be gone."""
        key = (room, endpoint.key)
        try:
            while batch:
                done = await self._send_batch(partition, room, endpoint, batch)
                if done:
                    self._cursors[key] = done
                    await self._queue.delivered(room, endpoint.key, done)
                if done != batch[-1].id:
                    return
                batch = (await self._queue.events([(room, done)], BATCH))[0]
        finally:
            self._busy.discard(key)
            self._dirty.add(room)

    async def _send_batch(self, partition: int, room: str, endpoint: Endpoint,
                          batch: list[QueuedEvent]) -> str:
        """Send the batch's events in order; returns the id of the last one sent ('' for
        none). The cursor is saved once a batch: a node that dies sends at most a batch
        again."""
        done = ""
        for event in batch:
            if not self._holds(partition) or not await self._send(room, endpoint, event):
                break
            done = event.id
        return done

    async def _send(self, room: str, endpoint: Endpoint, event: QueuedEvent) -> bool:
        """Every webhook of the event the endpoint wants; False when one failed (the event
        is then held back and retried later: the ones before it go again too)."""
        if event.only and event.only != endpoint.key:
            return True
        for kind, webhook_id, body in webhooks(room, event):
            if not endpoint.wants(kind):
                continue
            if time.time() * 1000 - event.at_ms > self._settings.max_age * 1000:
                await self._bury(room, endpoint, event, webhook_id, body)
                continue
            try:
                await self._caller.deliver(endpoint.url, webhook_id, body,
                                           self._settings.timeout)
            except HookFailed as failed:
                self._held_back(room, endpoint, event, failed)
                return False
            self.results[(endpoint.url, "ok")] += 1
        self._retries.pop((room, endpoint.key), None)
        return True

    def _held_back(self, room: str, endpoint: Endpoint, event: QueuedEvent,
                   failed: HookFailed) -> None:
        self.results[(endpoint.url, "failed")] += 1
        retry = self._retries.get((room, endpoint.key))
        attempts = 1 if retry is None else retry.attempts + 1
        if retry is None:
            log.warning("webhook to %s failed (room %s; retried with backoff): %s",
                        endpoint.url, room, failed)
        ceiling = min(self._settings.max_backoff, FIRST_RETRY * 2 ** min(attempts - 1, 30))
        self._retries[(room, endpoint.key)] = _Retry(
            attempts, time.monotonic() + random.uniform(0, ceiling), event.at_ms)

    async def _bury(self, room: str, endpoint: Endpoint, event: QueuedEvent, webhook_id: str,
                    body: bytes) -> None:
        retry = self._retries.get((room, endpoint.key))
        reason = (f"not taken in {self._settings.max_age:g} s"
                  f"{'' if retry is None else f' ({retry.attempts} tries)'}")
        log.warning("webhook %s to %s is a dead letter: %s", webhook_id, endpoint.url, reason)
        await self._queue.bury(room, endpoint.key, DeadEvent(
            "", room, webhook_id, body, event.at_ms, reason), self._settings.dead_max)
        self.results[(endpoint.url, "dead")] += 1

    def _forget(self, room: str) -> None:
        """The room's queue was emptied (its stream and cursors deleted): a new stream's ids
        may start below the old cursors, so none is kept."""
        for endpoint in self._settings.endpoints:
            self._cursors.pop((room, endpoint.key), None)
            self._retries.pop((room, endpoint.key), None)
