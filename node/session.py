"""One client connection: its read loop, its outbound writes, its limits."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from node import disconnect
from node.config import Settings
from node.disconnect import Disconnect
from node.envelope import UNSEQUENCED
from node.presence import Member
from node.protocol import ChatError, Error, ErrorCode, event_frame
from node.ratelimit import FloodGuard, TokenBucket

log = logging.getLogger("node.session")

Dispatch = Callable[["Session", str], Awaitable[None]]


class Session:
    """A connected client.

    Outbound frames are written straight to the transport: the transport's buffer is the
    outbound queue, bounded by `max_buffer`, and a client that lets it overflow is closed.
    While a join is in progress, room deliveries are held back so that the joiner sees
    `room_joined` first and then every later event exactly once.
    """

    __slots__ = (
        "id", "member", "room", "last_pong", "_ws", "_transport", "_dispatch", "_bucket",
        "_flood", "_max_buffer", "_held", "_closing", "_closer", "drained",
    )

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, settings: Settings,
                 dispatch: Dispatch) -> None:
        transport = request.transport
        assert transport is not None, "the WebSocket must be prepared first"
        now = time.monotonic()
        self.id = uuid.uuid4().hex
        self.member: Member | None = None
        self.room: str | None = None
        self.drained = False  # closed by a drain: its presence is held for the grace period
        self.last_pong = now
        self._ws = ws
        self._transport = transport
        self._dispatch = dispatch
        self._bucket = TokenBucket(settings.rate, settings.burst, now)
        self._flood = FloodGuard(settings.flood_limit, settings.flood_window)
        self._max_buffer = settings.max_buffer
        self._held: list[tuple[int, bytes]] | None = None
        self._closing = False
        self._closer: asyncio.Task[None] | None = None  # keeps `close_soon`'s task alive

    # --- inbound ---------------------------------------------------------------------

    async def run(self) -> None:
        """Read frames until the connection closes; a bug closes only this connection."""
        try:
            await self._read_loop()
        except Exception:
            log.exception("session=%s failed", self.id)
            await self.close(disconnect.INTERNAL)

    async def _read_loop(self) -> None:
        while True:
            message = await self._ws.receive()
            if message.type is WSMsgType.TEXT:
                await self._on_text(message.data)
            elif message.type is WSMsgType.BINARY:
                await self.close(disconnect.BINARY_FRAME)
                return
            else:
                return

    async def _on_text(self, data: str) -> None:
        try:
            self._check_rate()
            await self._dispatch(self, data)
        except ChatError as error:
            self.send(event_frame(Error(code=error.code, message=error.message)))
            if error.code is ErrorCode.RATE_LIMITED and self._flood.reject(time.monotonic()):
                await self.close(disconnect.FLOOD)

    def _check_rate(self) -> None:
        if not self._bucket.allow(time.monotonic()):
            raise ChatError(ErrorCode.RATE_LIMITED, "Too many messages; this one was dropped")

    # --- outbound --------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing or self._transport.is_closing()

    def send(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; never blocks."""
        if self.closed:
            return
        self._transport.write(frame)
        if self._transport.get_write_buffer_size() > self._max_buffer:
            self.close_soon(disconnect.SLOW_CONSUMER)

    def deliver(self, frame: bytes, seq: int) -> None:
        """A room event: sent now, or held while this session's join is in progress."""
        if self._held is None:
            self.send(frame)
        else:
            self._held.append((seq, frame))

    def hold(self) -> None:
        """Start holding room deliveries (a join is about to read history)."""
        self._held = []

    def release(self, seen_seq: int) -> None:
        """Send what was held, less messages up to `seen_seq` that history already gave."""
        held, self._held = self._held or [], None
        for seq, frame in held:
            if seq == UNSEQUENCED or seq > seen_seq:
                self.send(frame)

    # --- closing ---------------------------------------------------------------------

    async def close(self, reason: Disconnect) -> None:
        """Close the WebSocket with the reason's code; queued frames go out first."""
        if self._closing:
            return
        self._closing = True
        log.info("close session=%s code=%d reason=%s", self.id, reason.code, reason.reason)
        await self._ws.close(code=reason.code, message=reason.reason.encode(),
                             drain=reason is not disconnect.SLOW_CONSUMER)

    def close_soon(self, reason: Disconnect) -> None:
        """Close from a context that cannot wait (fan-out, timers)."""
        if self._closing or self._closer is not None:
            return
        self._closer = asyncio.get_running_loop().create_task(self.close(reason))
