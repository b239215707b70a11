"""Lean Redis connections for the two hot paths: publishing and receiving room messages.

Every message a node accepts is one script call, and every message of its rooms one Pub/Sub
push. Through redis-py each call took a pooled connection, a retry wrapper, a task for its
socket timeout and a stream read: about 30 % of a node's CPU at 60,000 deliveries/s with
senders on both nodes, more than the fan-out's writes (docs/performance-history.md, "Lean
Redis connections"). Here both are asyncio protocols with hiredis's reply parser: calls made in
one loop iteration go out in one write, replies complete their futures in order as they
arrive, pushes are handed on as each read is parsed, and one timer per connection (not one
per call) notices a Redis that went silent. redis-py still parses the URL, builds the TLS
context and turns error replies into its exception classes, so a call fails exactly as it
would through redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import AbstractConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError, InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis._parsers.base import BaseParser

from node.background import Background

log = logging.getLogger("node.backends.broker")

Arg = bytes | str | int

# A pipelined connection whose calls have waited this long without a word from Redis tells
# its owner (on a Redis Cluster it looks whether the primary was failed over); a healthy
# Redis answers in milliseconds, a loaded one well within a second.
STALL_AFTER = 1.0
# A subscriber connection that heard nothing for PING_INTERVAL sends a PING; one that then
# hears nothing for PONG_TIMEOUT more is dropped and opened again.
PING_INTERVAL = 1.0
PONG_TIMEOUT = 2.0


class ConnectionSettings(Protocol):
    """How redis-py opens connections: a pool's, or a cluster node's."""

    @property
    def connection_class(self) -> type[AbstractConnection]: ...

    @property
    def connection_kwargs(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a connection goes and how it introduces itself, as redis-py was configured."""

    host: str
    port: int
    path: str | None
    ssl: ssl.SSLContext | None
    username: str | None
    password: str | None
    db: int
    connect_timeout: float

    @classmethod
    def of(cls, settings: ConnectionSettings) -> Endpoint:
        """The endpoint of the connections a redis-py pool (or cluster node) would open."""
        # Made, not connected: redis-py's own reading of the URL and TLS options.
        connection: Any = settings.connection_class(**settings.connection_kwargs)
        context = getattr(connection, "ssl_context", None)
        return cls(
            host=getattr(connection, "host", ""), port=getattr(connection, "port", 0),
            path=connection.path if isinstance(connection, UnixDomainSocketConnection) else None,
            ssl=context.get() if context is not None else None,
            username=connection.username, password=connection.password, db=int(connection.db),
            connect_timeout=connection.socket_connect_timeout or 5.0)

    def __str__(self) -> str:
        return self.path or f"{self.host}:{self.port}"

    def handshake(self) -> list[tuple[Arg, ...]]:
        """The commands that open a session: authenticate, pick the database."""
        commands: list[tuple[Arg, ...]] = []
        if self.password:
            commands.append(("AUTH", self.username, self.password) if self.username
                            else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def encode(args: tuple[Arg, ...]) -> bytes:
    """One command as RESP, by hiredis (C): a third of the Python loop's time, which was
    4 µs of every publish."""
    return hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub says a 1-tuple


def reply_parser() -> hiredis.Reader:
    """hiredis's RESP parser, error replies made into redis-py's exception classes."""
    return hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)


class NotSent(ConnectionError):
    """The call never left this node: its connection failed before the call was written, so
    Redis cannot have run it and it may be made again."""


async def connect(endpoint: Endpoint, protocol: asyncio.Protocol) -> None:
    """Open a socket to `endpoint` for `protocol`, within the endpoint's connect timeout."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(endpoint.connect_timeout):
            if endpoint.path is not None:
                await loop.create_unix_connection(lambda: protocol, endpoint.path)
            else:
                await loop.create_connection(lambda: protocol, endpoint.host, endpoint.port,
                                             ssl=endpoint.ssl)
    except OSError as exc:  # TimeoutError included
        raise ConnectionError(f"Error connecting to {endpoint}: {exc!r}") from exc


class PipelinedConnection:
    """One connection at a time to one Redis; `call` never waits for another call. Opens on
    first use and again after a loss, sending `prologue` after the handshake (SCRIPT LOAD of
    the scripts it runs: an EVALSHA refused as NOSCRIPT would have to run again, out of the
    order the calls were made in). Calls in flight when it is lost fail with
    ConnectionError (`NotSent` for those not yet written); calls unanswered for `timeout`
    seconds fail with redis-py's TimeoutError (the connection is dropped). `on_stall` is
    called once a silent spell reaches STALL_AFTER with calls waiting (a failover may be
    under way: its owner can look, and `drop` the connection before the timeout)."""

    def __init__(self, endpoint: Endpoint, timeout: float,
                 prologue: tuple[tuple[Arg, ...], ...] = (),
                 on_stall: Callable[[], None] | None = None) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._prologue = prologue
        self._on_stall = on_stall
        self._socket: _Socket | None = None
        self._opening = Background()
        self._closed = False

    def call(self, *args: Arg) -> asyncio.Future[Any]:
        """Queue a command; its reply (or error) completes the future."""
        if self._closed:
            raise ConnectionError("connection closed")
        socket = self._socket
        if socket is None or socket.lost:
            socket = self._socket = _Socket(self._endpoint, self._timeout, self._prologue,
                                            self._on_stall)
            self._opening.spawn(socket.open(), "redis connect")
        return socket.call(encode(args))

    @property
    def stalled(self) -> bool:
        """Calls wait here and Redis has said nothing for STALL_AFTER seconds."""
        socket = self._socket
        return socket is not None and not socket.lost and socket.silent() >= STALL_AFTER

    def drop(self, error: Exception) -> None:
        """Fail the calls waiting here with `error` (`NotSent` for those never written); the
        next call opens another connection."""
        if self._socket is not None:
            self._socket.drop(error)

    async def close(self) -> None:
        self._closed = True
        opening = list(self._opening)
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        self.drop(ConnectionError("connection closed"))


class _Socket(asyncio.Protocol):
    """One socket to Redis: what was sent on it waits for its replies on it."""

    def __init__(self, endpoint: Endpoint, timeout: float,
                 prologue: tuple[tuple[Arg, ...], ...],
                 on_stall: Callable[[], None] | None) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._prologue = prologue
        self._on_stall = on_stall
        self._stall_told = False  # on_stall was called in this silent spell
        self._transport: asyncio.Transport | None = None
        self._reader = reply_parser()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._outgoing: list[bytes] = []
        self._heard = 0.0  # when Redis last answered, or a call went out after a quiet spell
        self._watchdog: asyncio.TimerHandle | None = None
        self._introducing = 0  # replies to the handshake and prologue still to come
        self.lost = False

    def call(self, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._waiting:
            self._heard = time.monotonic()
        self._waiting.append(future)
        self._outgoing.append(command)
        if self._transport is not None and len(self._outgoing) == 1:
            loop.call_soon(self._flush)
        return future

    async def open(self) -> None:
        try:
            await connect(self._endpoint, self)
        except ConnectionError as error:
            self.drop(error)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if self.lost:  # dropped (closed, timed out) while connecting
            self._transport.abort()
            return
        handshake = [*self._endpoint.handshake(), *self._prologue]
        self._introducing = len(handshake)  # their replies come first
        self._outgoing[:0] = [encode(command) for command in handshake]
        self._flush()

    def _flush(self) -> None:
        if self._transport is None or not self._outgoing:
            return
        data, self._outgoing = b"".join(self._outgoing), []
        self._transport.write(data)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self._next_look(), self._watch)

    def _next_look(self) -> float:
        """Seconds of silence at which the watchdog looks next: the stall, then the timeout."""
        if self._on_stall is None or self._stall_told:
            return self._timeout
        return min(STALL_AFTER, self._timeout)

    def silent(self) -> float:
        """Seconds Redis has kept calls waiting without a word (0 when none wait)."""
        return time.monotonic() - self._heard if self._waiting else 0.0

    def data_received(self, data: bytes) -> None:
        self._heard = time.monotonic()
        self._stall_told = False
        self._reader.feed(data)
        waiting = self._waiting
        while (reply := self._reader.gets()) is not False:
            if self._introducing:
                self._introducing -= 1
                if isinstance(reply, Exception):
                    self.drop(ConnectionError(f"Redis refused the connection: {reply}"))
                    return
                continue
            if not waiting:  # a reply nobody asked for: the stream is not what we think
                self.drop(InvalidResponse("unexpected reply from Redis"))
                return
            future = waiting.popleft()
            if future.done():
                continue  # its caller gave up waiting
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _watch(self) -> None:
        """While calls wait: tell of a stall once, drop a connection Redis stopped answering."""
        self._watchdog = None
        if not self._waiting or self.lost:
            return
        silent = self.silent()
        if silent >= self._timeout:
            self.drop(RedisTimeoutError(f"no reply from {self._endpoint} in {silent:.1f}s"))
            return
        if self._on_stall is not None and not self._stall_told and silent >= STALL_AFTER:
            self._stall_told = True
            self._on_stall()
        self._watchdog = asyncio.get_running_loop().call_later(
            max(self._next_look() - silent, 0.0), self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        self.drop(ConnectionError(f"Connection to {self._endpoint} lost"
                                  + (f": {exc!r}" if exc else "")))

    def drop(self, error: Exception) -> None:
        """Fail every call waiting here and close the socket; the next call opens another.
        The newest calls, still in `_outgoing`, were never written: they fail as `NotSent`."""
        self.lost = True
        unsent = len(self._outgoing)
        waiting, self._waiting, self._outgoing = self._waiting, deque(), []
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            self._transport.abort()
            self._transport = None
        for index, future in enumerate(waiting):
            if not future.done():
                future.set_exception(
                    NotSent(str(error)) if index >= len(waiting) - unsent else error)


class PushConnection(asyncio.Protocol):
    """A connection in Pub/Sub mode: commands go out, and what comes back is pushes
    (`[kind, channel, data]`: messages, subscribe confirmations), each handed to `on_push`
    as it is parsed, several per read. `lost` completes when the socket is gone."""

    def __init__(self, endpoint: Endpoint, on_push: Callable[[list[Any]], None]) -> None:
        self._endpoint = endpoint
        self._on_push = on_push
        self._transport: asyncio.Transport | None = None
        self._reader = reply_parser()
        self._introductions: deque[asyncio.Future[Any]] = deque()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.heard = time.monotonic()  # when Redis last sent anything

    @classmethod
    async def open(cls, endpoint: Endpoint, on_push: Callable[[list[Any]], None]
                   ) -> PushConnection:
        """Connected and introduced (authenticated, database selected), or ConnectionError."""
        connection = cls(endpoint, on_push)
        await connect(endpoint, connection)
        loop = asyncio.get_running_loop()
        for command in endpoint.handshake():
            connection._introductions.append(loop.create_future())
            connection.send(*command)
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                for reply in list(connection._introductions):
                    await reply
        except BaseException as exc:
            connection.close()
            if isinstance(exc, Exception):
                raise ConnectionError(f"Redis refused the connection: {exc!r}") from exc
            raise
        return connection

    def send(self, *args: Arg) -> None:
        if self._transport is not None:
            self._transport.write(encode(args))

    async def watch(self) -> None:
        """Return once the connection is lost. A PING goes out whenever Redis was quiet for
        PING_INTERVAL (its answer is a push too); quiet for PING_INTERVAL + PONG_TIMEOUT,
        the connection is dropped: a Redis gone without a FIN (a container restarted, a
        network cut) is noticed within seconds, with no traffic to show it."""
        while not self.lost.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.lost), PING_INTERVAL)
            quiet = time.monotonic() - self.heard
            if quiet >= PING_INTERVAL + PONG_TIMEOUT:
                log.warning("redis %s quiet for %.1fs; dropping the subscriber connection",
                            self._endpoint, quiet)
                self.close()
                await self.lost
            elif quiet >= PING_INTERVAL:
                self.send(b"PING")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if self._introductions:
                introduced = self._introductions.popleft()
                if isinstance(reply, Exception):
                    introduced.set_exception(reply)
                else:
                    introduced.set_result(reply)
            elif isinstance(reply, list):
                self._on_push(reply)
            else:  # an error (or a stray reply): the subscriptions are not what we think
                log.warning("redis %s answered a subscriber with %r", self._endpoint, reply)
                self.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for introduced in self._introductions:
            if not introduced.done():
                introduced.set_exception(ConnectionError(f"Connection to {self._endpoint} lost"))
        if not self.lost.done():
            self.lost.set_result(None)
