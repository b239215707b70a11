"""Receiving room channels from one Redis: one subscriber connection that survives anything.

The broker (node.broker_redis) publishes; this module receives. A Redis Cluster has a
subscriber per shard instead (node.subscriber_cluster).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from node.background import Background
from node.backoff import Backoff
from node.redis_support import COMMAND_TIMEOUT, translate_errors

log = logging.getLogger("node.broker")


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

    async def subscribe(self, channel: bytes, command: Callable[[bytes], Awaitable[object]]
                        ) -> None:
        confirmed = asyncio.get_running_loop().create_future()
        self._waiting[channel] = confirmed
        try:
            await command(channel)
            await asyncio.wait_for(confirmed, COMMAND_TIMEOUT)
        finally:
            self._waiting.pop(channel, None)

    def confirm(self, channel: bytes) -> None:
        confirmed = self._waiting.get(channel)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)


class ChannelSubscriber:
    """One connection, plain Pub/Sub. It reconnects with capped, jittered backoff,
    subscribes the channels the broker wants, and tells the broker."""

    def __init__(self, client: redis.Redis, own_channel: str, channels: Channels) -> None:
        self._pubsub = client.pubsub()
        self._own_channel = own_channel
        self._channels = channels
        self._confirmations = Confirmations()
        self._listener: asyncio.Task[None] | None = None
        self._connected = False
        self._closing = False
        self._connected_once = asyncio.Event()
        self._tasks = Background()

    @property
    def ready(self) -> bool:
        return self._connected

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="redis-subscriber")
        try:
            await asyncio.wait_for(self._connected_once.wait(), COMMAND_TIMEOUT)
        except TimeoutError:
            log.warning("redis unreachable at start; retrying in the background")

    async def close(self) -> None:
        self._closing = True
        pending = [*self._tasks, *([self._listener] if self._listener else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._pubsub.aclose()

    @translate_errors
    async def subscribe(self, channel: bytes) -> None:
        await self._confirmations.subscribe(channel, self._pubsub.subscribe)

    async def unsubscribe(self, channel: bytes) -> None:
        try:
            await self._pubsub.unsubscribe(channel)
        except (RedisError, OSError) as exc:
            log.debug("unsubscribe %r deferred to reconnect: %s", channel, exc)

    async def _listen(self) -> None:
        """Read the subscriber connection for ever, reconnecting after failures.

        The node's own channel is always subscribed, so the connection always has a
        subscription to re-establish and every reconnect is confirmed by a message.
        """
        backoff = Backoff()
        while not self._closing:  # a flag too: redis-py can swallow a cancel
            try:
                if not self._pubsub.subscribed:
                    await self._pubsub.subscribe(self._own_channel)
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._set_connected(False, str(exc))
                await asyncio.sleep(backoff.next_delay())
                continue
            except Exception as exc:  # a bug below us must not end delivery for good
                log.exception("subscriber failed; reconnecting")
                self._set_connected(False, repr(exc))
                await self._pubsub.aclose()  # a fresh connection: the old one's state is unknown
                await asyncio.sleep(backoff.next_delay())
                continue
            if not self._connected:
                backoff.reset()
                self._set_connected(True, "subscriber connected")
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: dict[str, object]) -> None:
        kind, channel, data = message["type"], message["channel"], message["data"]
        if kind == "message":
            self._channels.deliver(data, channel)  # type: ignore[arg-type]
        elif kind == "subscribe":
            self._confirmations.confirm(channel)  # type: ignore[arg-type]

    def _set_connected(self, connected: bool, why: str) -> None:
        """Record a transition (logged once each way); a (re)connect re-announces state."""
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            log.info("redis connected")
            self._connected_once.set()
            self._tasks.spawn(self._reconnected())
        else:
            log.warning("redis unavailable: %s", why)

    async def _reconnected(self) -> None:
        """Subscribe exactly the channels the broker wants, then tell it.

        redis-py re-subscribes the channels it knew; a subscribe or unsubscribe that failed
        during the outage is repaired here.
        """
        own = self._own_channel.encode()
        wanted = self._channels.wanted_channels()
        current = set(self._pubsub.channels) - {own}
        try:
            if stale := current - wanted:
                await self._pubsub.unsubscribe(*stale)
            if missing := wanted - current:
                await self._pubsub.subscribe(*missing)
            await self._channels.reconnected()
        except Exception:
            log.exception("re-announcing after a redis reconnect failed")
