"""Server pings: one timer for the whole node, each connection pinged once per interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from node.chat import disconnect
from node.chat.hub import Hub
from node.chat.protocol import ServerPing, event_frame
from node.chat.session import Session

PING_TICK = 0.1  # seconds between two slices of the node's pings


def now_ms() -> int:
    return int(time.time() * 1000)


def slices_of(sessions: Iterable[Session], count: int) -> list[list[Session]]:
    """The sessions in `count` even slices, each session always in the same one (by its
    random id: an object's own hash follows its address, which steps evenly), so that it is
    pinged once per interval wherever it came in."""
    slices: list[list[Session]] = [[] for _ in range(count)]
    for session in sessions:
        slices[hash(session.id) % count].append(session)
    return slices


async def run_heartbeat(hub: Hub, interval: float, timeout: float) -> None:
    """Every ping interval: close connections silent past the timeout, ping the rest.

    A single loop instead of a timer per connection keeps idle connections cheap; the
    connections are pinged a slice at a time, every PING_TICK, across the interval: all at
    once, 19,500 pings (and their pongs) held a node's loop for most of a second every
    interval (docs/performance.md, *A node's idle connections*). A silent client is closed
    between ping-timeout and ping-timeout + ping-interval after its last pong, and never
    before a ping has gone unanswered.
    """
    count = max(1, round(interval / PING_TICK))
    tick = interval / count
    while True:
        for sessions in slices_of(hub.sessions, count):
            await asyncio.sleep(tick)
            ping(sessions, timeout)


def ping(sessions: list[Session], timeout: float) -> None:
    """Ping a slice (those still open), closing those silent for `timeout` seconds though
    pinged since they were last heard. One not pinged since is pinged, however long ago that
    was: a node busy enough to stretch the interval past the timeout (thousands of clients
    arriving at once) closed clients it had never asked."""
    now = time.monotonic()
    frame = event_frame(ServerPing(timestamp=now_ms()))
    for session in sessions:
        if now - session.last_pong > timeout and session.pinged_at > session.last_pong:
            session.close_soon(disconnect.PING_TIMEOUT)
        else:
            session.pinged_at = now
            session.send(frame)
