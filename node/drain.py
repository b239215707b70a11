"""Coordinated graceful drain: a node leaves the cluster without costing a user a message.

A draining node fails readiness and refuses new upgrades at once (nginx retries them on
another node), then tells its clients to reconnect and closes them one by one, spread over
the drain window, so that the rest of the cluster sees a ramp and not a spike. Only one node
drains at a time on request (a rolling restart): the drain takes an expiring cluster lock. A
node stopping for good (SIGTERM) drains at once, so that a whole cluster stops in one drain
window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from node.backends.coordination import Coordination
from node.backends.errors import Unavailable
from node.chat import disconnect
from node.chat.hub import Hub
from node.chat.protocol import ServerShutdown, event_frame

log = logging.getLogger("node.drain")

# A closed client waits uniform(0, this) before reconnecting: the reconnects spread too.
RETRY_SPREAD_MS = 1000
# How long the last closes may take after the window, and how long the lock outlives it.
CLOSE_MARGIN = 5.0
LOCK_MARGIN = 30.0


class DrainRefused(Exception):
    """An admin drain request the node turns down; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def shutdown_notice() -> bytes:
    """`server_shutdown` with a jittered `retryAfterMs`, framed."""
    return event_frame(ServerShutdown(retry_after_ms=random.randint(0, RETRY_SPREAD_MS)))


class Drainer:
    """Runs this node's drain once; `finished` is set when its last client is gone."""

    def __init__(self, node_id: str, window: float, hub: Hub, coordination: Coordination,
                 departures: Callable[[], Awaitable[None]]) -> None:
        self._node_id = node_id
        self._window = window  # seconds over which its clients are closed
        self._hub = hub
        self._coordination = coordination
        self._departures = departures
        self.active = False
        self.finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def begin(self, force: bool) -> None:
        """Start draining now (admin request), or raise `DrainRefused`."""
        if self.active:
            raise DrainRefused("already_draining", "This node is already draining")
        others = [n for n in await self._coordination.live_nodes() if n != self._node_id]
        if not others and not force:
            raise DrainRefused(
                "last_ready_node", "This is the last ready node; add force=1 to drain anyway"
            )
        holder = await self._coordination.lock_drain(self._lock_ttl)
        if holder not in (None, self._node_id):
            raise DrainRefused("drain_in_progress", f"Node {holder} is draining; retry later")
        self._task = asyncio.create_task(self._drain())

    async def drain_for_shutdown(self) -> None:
        """Drain because the process is stopping, at once: when the whole cluster stops,
        every node tells its clients in parallel instead of waiting for the others' drains.
        The lock is taken when free, so that no admin drain starts elsewhere meanwhile."""
        if self._task is None:
            with contextlib.suppress(Unavailable):  # nobody can coordinate: stop anyway
                holder = await self._coordination.lock_drain(self._lock_ttl)
                if holder not in (None, self._node_id):
                    log.info("node %s is draining too; draining at once", holder)
            self._task = asyncio.create_task(self._drain())
        await self._task

    @property
    def _lock_ttl(self) -> float:
        return self._window + LOCK_MARGIN

    async def _drain(self) -> None:
        self.active = True
        sessions = [session for session in self._hub.sessions if session.open]
        log.info("draining %d clients over %.1fs", len(sessions), self._window)
        interval = self._window / max(len(sessions), 1)
        paced = False
        for session in sessions:
            if not session.open:
                continue  # its client left meanwhile: no turn, and no wait for it
            if paced:
                await asyncio.sleep(interval)
            paced = True
            session.drained = True
            session.send(shutdown_notice())
            session.close_soon(disconnect.SHUTDOWN)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hub.emptied(), CLOSE_MARGIN)
        await self._departures()  # the grace of the last ones closed
        with contextlib.suppress(Unavailable):
            await self._coordination.unlock_drain()
        log.info("drained")
        self.finished.set()
