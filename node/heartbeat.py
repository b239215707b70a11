"""Server pings: one timer for the whole node, one frame for every connection."""

from __future__ import annotations

import asyncio
import time

from node import disconnect
from node.config import Settings
from node.hub import Hub
from node.protocol import ServerPing, event_frame


def now_ms() -> int:
    return int(time.time() * 1000)


async def run_heartbeat(hub: Hub, settings: Settings) -> None:
    """Every ping interval: close connections silent past the timeout, ping the rest.

    A single loop instead of a timer per connection keeps idle connections cheap; a silent
    client is closed between ping-timeout and ping-timeout + ping-interval after its last pong.
    """
    while True:
        await asyncio.sleep(settings.ping_interval)
        now = time.monotonic()
        ping = event_frame(ServerPing(timestamp=now_ms()))
        for session in hub.sessions:
            if now - session.last_pong > settings.ping_timeout:
                session.close_soon(disconnect.PING_TIMEOUT)
            else:
                session.send(ping)
