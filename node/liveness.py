"""Keeping this node's presence true in shared state, and cleaning up after dead nodes."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from node.backends.coordination import Coordination
from node.backends.errors import Unavailable
from node.backends.presence import Presence
from node.backoff import Backoff
from node.chat.hub import Hub
from node.identity import names

log = logging.getLogger("node.liveness")


class Liveness:
    """Heartbeats this node, re-announces its members when shared state forgot them, and
    tells rooms about the members of nodes that died."""

    def __init__(self, presence: Presence, coordination: Coordination, hub: Hub,
                 node_ttl: float) -> None:
        self._presence = presence
        self._coordination = coordination
        self._hub = hub
        self._interval = node_ttl / 4
        self._stop = asyncio.Event()
        self.healthy = True  # False while ticks fail: the node is then not ready

    async def resync(self) -> None:
        """Write this node's members into presence again (after a reconnect or a lapse)."""
        async with self._hub.presence_gate.resync():  # no leave lands in between
            await self._presence.resync(self._hub.held(), names.held(self._hub.named()))

    async def run(self) -> None:
        """Tick until `stop`; stopped by a flag because redis-py can swallow a cancel. A
        failing tick, whatever the error, marks the node not ready (its presence may lapse
        and be reaped) and is retried with backoff, never more slowly than the interval."""
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                await self._tick()
                if not self.healthy:
                    log.info("presence upkeep resumed")
                self.healthy = True
                backoff.reset()
            except Unavailable as exc:
                if self.healthy:
                    log.warning("presence upkeep paused: %s", exc)
                self.healthy = False
            except Exception:  # a bug must not end the upkeep while the node looks ready
                log.exception("presence upkeep failed; retrying")
                self.healthy = False
            delay = self._interval if self.healthy else min(self._interval, backoff.next_delay())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def stop(self) -> None:
        self._stop.set()

    async def _tick(self) -> None:
        if await self._coordination.heartbeat(len(self._hub.sessions)):
            await self.resync()
        for departure in await self._presence.reap():
            log.info("reaped %s from %s", departure.member.name, departure.room)
