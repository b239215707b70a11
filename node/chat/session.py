"""One client connection: its inbound frames in order, its outbound writes, its limits."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from node.backends.envelope import Publication, base_of
from node.backends.presence import Member
from node.chat import disconnect
from node.chat.delivery_batches import DeliveryBatches
from node.chat.disconnect import Disconnect
from node.chat.protocol import ChatError, Error, ErrorCode, count_update, event_frame
from node.identity.jwt_tokens import Claims
from node.metrics import Metrics
from node.ratelimit import Budget, FloodGuard, Rate
from node.transport.websocket import WebSocket

log = logging.getLogger("node.chat.session")

Dispatch = Callable[["Session", str], Awaitable[None]]
OnEnd = Callable[["Session"], Awaitable[None]]
INBOX_LIMIT = 64  # frames read ahead of the handler before the socket stops being read


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one connection may send; one object shared by every session of a node."""

    messages: Rate  # its chat frames
    joins: Rate  # its joins and history requests, which each read a room's history
    flood_limit: int  # rate-limited frames within flood_window that get it closed
    flood_window: float


class Session:
    """A connected client.

    Frames arrive as callbacks from its `WebSocket` and are handled one at a time, in order,
    by a task that exists only while there is something to handle: an idle session holds no
    task. Outbound frames are written straight to the transport: the transport's buffer is
    the outbound queue, bounded by `max_buffer`, and a client that lets it overflow is
    closed; a busy client's room events may wait for the next tick to share one write
    (`DeliveryBatches`). While a join is in progress, room deliveries are held back so that
    the joiner sees `room_joined` first and then every later event exactly once.
    """

    __slots__ = (
        "id", "address", "member", "claims", "holds_name", "budgets", "room", "last_pong",
        "pinged_at", "drained", "_expiry", "_metrics", "_ws", "_dispatch",
        "_on_end", "_limits", "_full_at", "_flood", "_held", "_closing", "_closer",
        "_inbox", "_worker", "_lost", "_finished", "_floor", "_epoch", "_batches", "_batch",
        "_writes_full_at", "_joins_full_at",
    )

    def __init__(self, ws: WebSocket, limits: SessionLimits, dispatch: Dispatch, on_end: OnEnd,
                 address: str, metrics: Metrics, batches: DeliveryBatches) -> None:
        now = time.monotonic()
        self.id = uuid.uuid4().hex
        self.address = address  # the client's, for its address's share of the limits
        self.member: Member | None = None
        self.claims: Claims | None = None  # JWT mode: what its token allows, until when
        self.holds_name = False  # anonymous mode: it holds its member's display name
        self._expiry: asyncio.TimerHandle | None = None
        self._metrics = metrics
        self.budgets: tuple[Budget, ...] = ()  # what its messages are charged to, from auth
        self.room: str | None = None
        self.drained = False  # closed by a drain: its presence is held for the grace period
        self.last_pong = now
        self.pinged_at = 0.0  # when the heartbeat last pinged it (monotonic)
        self._ws = ws
        self._dispatch = dispatch
        self._on_end = on_end
        self._limits = limits
        self._full_at = now  # its chat frames' token bucket (see Rate)
        self._joins_full_at = now  # its joins' token bucket
        self._flood: FloodGuard | None = None  # made at the first rate-limited frame
        self._held: list[tuple[Publication, bytes]] | None = None
        self._floor = 0  # the newest seq its room_joined gave: never delivered again
        self._epoch = ""  # the room's history epoch its room_joined was in (or a fork led to)
        self._closing = False
        self._closer: asyncio.Task[None] | None = None  # keeps `close_soon`'s task alive
        self._inbox: deque[str] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._lost = False
        self._finished: asyncio.Future[None] | None = None
        self._batches = batches
        self._batch: list[bytes] | None = None  # room events waiting for the next tick
        self._writes_full_at = now  # its room events' writes (see DeliveryBatches)

    # --- inbound: callbacks from the WebSocket ----------------------------------------

    def on_text(self, text: str) -> None:
        self.last_pong = time.monotonic()  # anything heard is alive, even behind a slow step
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(text)
        if len(self._inbox) == INBOX_LIMIT:
            self._ws.hold_reading()
        self._work_soon()

    def on_binary(self, data: bytes) -> None:
        self.close_soon(disconnect.BINARY_FRAME)

    def on_closed(self) -> None:
        self._lost = True
        self._work_soon()

    def _work_soon(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        """Handle queued frames in order; once the connection is gone, end the session."""
        try:
            while self._inbox and not self._lost:
                text = self._inbox.popleft()
                if len(self._inbox) == INBOX_LIMIT // 2:
                    self._ws.release_reading()
                await self._on_text(text)
        except Exception:
            log.exception("session=%s failed", self.id)
            self.close_soon(disconnect.INTERNAL)
        finally:
            if not self._inbox:
                self._inbox = None  # an idle session keeps no queue
            self._worker = None
        if self._lost:
            await self._end()

    async def _end(self) -> None:
        """The connection is gone: runs once, after the last frame was handled."""
        if self._expiry is not None:
            self._expiry.cancel()
        try:
            await self._on_end(self)
        finally:
            self._ending().set_result(None)

    def _ending(self) -> asyncio.Future[None]:
        """Done when the session has ended; made on first use, as most never need it."""
        if self._finished is None:
            self._finished = asyncio.get_running_loop().create_future()
        return self._finished

    async def _on_text(self, data: str) -> None:
        try:
            self._check_rate()
            await self._dispatch(self, data)
        except ChatError as error:
            self._metrics.errors[str(error.code)] += 1
            self.send(event_frame(Error(code=error.code, message=error.message)))
            if error.close is not None:
                self.close_soon(error.close)
            elif error.code is ErrorCode.RATE_LIMITED and self._flooded():
                self.close_soon(disconnect.FLOOD)

    def _flooded(self) -> bool:
        """Count a rate-limited frame; True when the client is past the flood limit."""
        if self._flood is None:
            self._flood = FloodGuard(self._limits.flood_limit, self._limits.flood_window)
        return self._flood.reject(time.monotonic())

    def check_join(self, what: str = "joins") -> None:
        """Take a join from this connection's join bucket, or refuse it: each join (and each
        history request, which takes from the same bucket) reads a room's history, so they
        are dearer than messages."""
        full_at = self._limits.joins.take(self._joins_full_at, time.monotonic())
        if full_at is None:
            raise ChatError(ErrorCode.RATE_LIMITED, f"Too many {what}; slow down")
        self._joins_full_at = full_at

    def _check_rate(self) -> None:
        full_at = self._limits.messages.take(self._full_at, time.monotonic())
        if full_at is None:
            raise ChatError(ErrorCode.RATE_LIMITED, "Too many messages; this one was dropped")
        self._full_at = full_at

    # --- outbound --------------------------------------------------------------------

    @property
    def open(self) -> bool:
        """Neither closing nor closed by its client: a drain still has to close it."""
        return not (self._closing or self._lost)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    def send(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame now, after any room events waiting for the
        tick; never blocks."""
        if self._batch is not None:
            self._batch.append(frame)
            self._write_batch(self._batch)
        elif not self._closing and not self._ws.send(frame):
            self.close_soon(disconnect.SLOW_CONSUMER)

    def deliver(self, frame: bytes, publication: Publication) -> None:
        """A room event: sent now, added to the batch of a busy session, or held while this
        session's join is in progress. The fan-out's hottest line: `send` inlined."""
        if self._held is not None:
            self._held.append((publication, frame))
        elif publication.seq <= self._floor and publication.seq:
            return  # in its room_joined already: a live copy slower than the history read
        elif self._batch is not None:
            self._batch.append(frame)
        elif self._closing:
            return
        elif (writes := self._batches.writes) is None:
            if not self._ws.send(frame):
                self.close_soon(disconnect.SLOW_CONSUMER)
        elif (full_at := writes.take(self._writes_full_at, time.monotonic())) is None:
            self._batch = [frame]
            self._batches.add(self)
        else:
            self._writes_full_at = full_at
            if not self._ws.send(frame):
                self.close_soon(disconnect.SLOW_CONSUMER)

    def flush(self) -> None:
        """The tick: write the room events gathered since the last one in one go and stay
        on the tick; a tick with none gathered (or a closing session) ends the busy spell."""
        batch = self._batch
        if not batch or self._closing:
            self._batch = None
            return
        self._write_batch(batch)
        self._batches.add(self)

    def _write_batch(self, batch: list[bytes]) -> None:
        """Write `batch` in one go; an empty batch takes its place until the next tick."""
        self._batch = []
        if self._closing:
            return
        self._metrics.batches += 1
        self._metrics.batched += len(batch)
        if not self._ws.send_all(batch):
            self.close_soon(disconnect.SLOW_CONSUMER)

    def hold(self) -> None:
        """Start holding room deliveries (a join is about to read history and roster)."""
        self._held = []

    def release(self, seen_seq: int, seen_presence: int, epoch: str = "",
                counted: bool = False) -> None:
        """Send what was held, less what `room_joined` already gave: messages up to
        `seen_seq` of `epoch` (and any of an epoch it forked away from), membership changes
        up to presence version `seen_presence`. A `counted` session (its room is large) gets
        the newest count of the changes instead."""
        held, self._held = self._held or [], None
        self._floor, self._epoch = seen_seq, epoch
        newest: Publication | None = None
        for publication, frame in held:
            if publication.seq:
                if publication.seq > self._floor and publication.epoch in ("", self._epoch):
                    self.send(frame)
            elif publication.epoch:
                self._fork(frame, publication)
            elif publication.presence > seen_presence:
                if not counted:
                    self.send(frame)
                elif newest is None or publication.presence > newest.presence:
                    newest = publication
        if newest is not None:
            self.send(count_update(newest)[1])

    def fork(self, frame: bytes, publication: Publication) -> None:
        """Its room's history forked into `publication.epoch` (the `history_reset` it
        carries): unless its room_joined was in that epoch already, the seqs after the fork's
        base are the new epoch's, and none of them was in its room_joined."""
        if self._held is not None:
            self._held.append((publication, frame))  # decided by the room_joined's epoch
        else:
            self._fork(frame, publication)

    def _fork(self, frame: bytes, publication: Publication) -> None:
        if publication.epoch != self._epoch:
            self._epoch = publication.epoch
            self._floor = min(self._floor, base_of(publication.epoch))
            self.send(frame)

    # --- closing ---------------------------------------------------------------------

    async def close(self, reason: Disconnect) -> None:
        """Close the WebSocket with the reason's code (queued frames go out first) and wait
        until the session has ended. Not from the session's own handling: use close_soon."""
        if not self._closing:
            if self._batch:
                self._write_batch(self._batch)
            self._closing = True
            log.info("close session=%s code=%d reason=%s", self.id, reason.code, reason.reason)
            self._metrics.closes[str(reason.code)] += 1
            self._ws.close(reason.code, reason.reason)
        await self.ended()

    async def connection_gone(self) -> None:
        """Wait until the socket itself is closed (bounded: see `WebSocket.gone`)."""
        await self._ws.gone()

    async def ended(self) -> None:
        """Wait until the connection is gone and its departure handled."""
        await asyncio.shield(self._ending())

    def expire_at(self, when: float, reason: Disconnect) -> None:
        """Close for `reason` at `when` (seconds since the Unix epoch), unless called again
        first (a refreshed token)."""
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, when - time.time()), self.close_soon, reason)

    def close_soon(self, reason: Disconnect) -> None:
        """Close from a context that cannot wait (fan-out, timers)."""
        if self._closing or self._closer is not None:
            return
        self._closer = asyncio.get_running_loop().create_task(self.close(reason))
