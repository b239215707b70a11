"""Receiving room channels from one Redis: one subscriber connection that survives anything.

The broker (node.backends.redis.broker) publishes; this module receives. A Redis Cluster has a
subscriber per shard instead (node.backends.redis.subscriber_cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from redis.exceptions import ConnectionError

from node.backends.redis.connection import Endpoint, PushConnection
from node.backends.redis.support import COMMAND_TIMEOUT, translate_errors
from node.background import Background
from node.backoff import Backoff

log = logging.getLogger("node.backends.broker")

MIN_PAUSE = 0.1  # seconds between connection attempts at the least (the backoff's base)


class Channels(Protocol):
    """What a subscriber serves: the broker that owns it."""

    def deliver(self, data: bytes, channel: bytes) -> None:
        """A message arrived on a subscribed channel."""

    def wanted_channels(self) -> set[bytes]:
        """The channels that should be subscribed now."""

    async def reconnected(self) -> None:
        """Subscriptions were re-established after a loss: messages may have been missed."""


class Subscriber(Protocol):
    @property
    def ready(self) -> bool:
        """Whether every wanted channel is subscribed on a live connection."""

    async def start(self) -> None:
        """Connect; waits (boundedly) for Redis so that a fresh node is ready."""

    async def subscribe(self, channel: bytes) -> None:
        """Subscribe and wait for Redis to confirm: nothing published after this is missed."""

    async def unsubscribe(self, channel: bytes) -> None:
        """Never fails: an unsubscribe lost to an outage is repaired on reconnect."""

    async def close(self) -> None: ...


class Confirmations:
    """Subscribe confirmations awaited, by channel."""

    def __init__(self) -> None:
        self._waiting: dict[bytes, asyncio.Future[None]] = {}

    async def subscribe(self, channel: bytes, connection: PushConnection, command: bytes
                        ) -> None:
        """Send `command` (SUBSCRIBE, SSUBSCRIBE) for `channel` on `connection` and wait until
        Redis confirms it; unconfirmed, the connection is not what it seems: it is dropped
        (and opened anew by its owner)."""
        confirmed = asyncio.get_running_loop().create_future()
        self._waiting[channel] = confirmed
        try:
            connection.send(command, channel)
            await asyncio.wait_for(confirmed, COMMAND_TIMEOUT)
        except TimeoutError:
            connection.close()
            raise
        finally:
            self._waiting.pop(channel, None)

    def confirm(self, channel: bytes) -> None:
        confirmed = self._waiting.get(channel)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)


class ChannelSubscriber:
    """One connection, plain Pub/Sub, read by a lean push connection
    (node.backends.redis.connection: hiredis parses each read's messages, no task per read). It
    reconnects with capped, jittered backoff, subscribes the channels the broker wants, and
    tells the broker. A Redis that stops answering is noticed (PushConnection.watch)."""

    def __init__(self, endpoint: Endpoint, own_channel: str, channels: Channels) -> None:
        self._endpoint = endpoint
        self._own_channel = own_channel.encode()
        self._channels = channels
        self._confirmations = Confirmations()
        self._connection: PushConnection | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._up = asyncio.Event()  # set while connected
        self._wake = asyncio.Event()  # a subscribe is waiting for a connection
        self._tasks = Background()

    @property
    def ready(self) -> bool:
        return self._connection is not None

    async def start(self) -> None:
        self._keeper = asyncio.create_task(self._keep_connected(), name="redis-subscriber")
        try:
            await asyncio.wait_for(self._up.wait(), COMMAND_TIMEOUT)
        except TimeoutError:
            log.warning("redis unreachable at start; retrying in the background")

    async def close(self) -> None:
        pending = [*self._tasks, *([self._keeper] if self._keeper else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._connection is not None:
            self._connection.close()

    @translate_errors
    async def subscribe(self, channel: bytes) -> None:
        if self._connection is None:  # try now rather than at the end of the backoff
            self._wake.set()
            await asyncio.wait_for(self._up.wait(), COMMAND_TIMEOUT)
        connection = self._connection
        if connection is None:
            raise ConnectionError("redis subscriber not connected")
        await self._confirmations.subscribe(channel, connection, b"SUBSCRIBE")

    async def unsubscribe(self, channel: bytes) -> None:
        """Sent if connected; a fresh connection subscribes only what is wanted anyway."""
        if self._connection is not None:
            self._connection.send(b"UNSUBSCRIBE", channel)

    async def _keep_connected(self) -> None:
        """Connect, subscribe, and watch the connection until it is lost; again, for ever."""
        backoff = Backoff()
        while True:
            try:
                connection = await self._connect()
                backoff.reset()
                self._set_connected(connection)
                await connection.watch()
            except (ConnectionError, TimeoutError) as exc:
                log.debug("redis subscriber cannot connect: %s", exc)
            except Exception:  # a bug below us must not end delivery for good
                log.exception("redis subscriber failed; reconnecting")
            if self._connection is not None:
                self._connection.close()
                self._set_connected(None)
            await self._pause(backoff.next_delay())

    async def _connect(self) -> PushConnection:
        """A connection subscribed to the node's own channel: confirmed, it is live."""
        connection = await PushConnection.open(self._endpoint, self._on_push)
        try:
            await self._confirmations.subscribe(self._own_channel, connection, b"SUBSCRIBE")
        except BaseException:
            connection.close()
            raise
        return connection

    async def _pause(self, delay: float) -> None:
        """Sleep `delay` before the next attempt; a subscribe waiting cuts it short (but not
        below the backoff's base, so that a burst of joins is not a burst of connects)."""
        await asyncio.sleep(MIN_PAUSE)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, delay - MIN_PAUSE))

    def _on_push(self, push: list[Any]) -> None:
        kind = push[0]
        if kind == b"message":
            self._channels.deliver(push[2], push[1])
        elif kind == b"subscribe":
            self._confirmations.confirm(push[1])

    def _set_connected(self, connection: PushConnection | None) -> None:
        """Record a transition (logged once each way); a (re)connect re-announces state."""
        self._connection = connection
        if connection is not None:
            log.info("redis connected")
            self._up.set()
            self._tasks.spawn(self._reconnected(connection), "redis resubscribe")
        else:
            self._up.clear()
            log.warning("redis unavailable: subscriber connection lost")

    async def _reconnected(self, connection: PushConnection) -> None:
        """Subscribe the channels the broker wants on the fresh connection, then tell it."""
        try:
            if wanted := self._channels.wanted_channels():
                connection.send(b"SUBSCRIBE", *wanted)
            await self._channels.reconnected()
        except Exception:
            log.exception("re-announcing after a redis reconnect failed")
