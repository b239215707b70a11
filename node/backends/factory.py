"""The backends a node runs on, chosen by its settings: in memory (one node, no Redis), on
one Redis, or on a Redis Cluster."""

from __future__ import annotations

from dataclasses import dataclass

from node.backends.broker import Broker
from node.backends.coordination import Coordination
from node.backends.event_queue import EventQueue, Recorded
from node.backends.memory.broker import MemoryBroker
from node.backends.memory.coordination import MemoryCoordination
from node.backends.memory.presence import MemoryPresence
from node.backends.presence import Announcements, Presence, RoomPolicy
from node.backends.redis.broker import RedisBroker
from node.backends.redis.coordination import RedisCoordination
from node.backends.redis.event_queue import Marks, RedisEventQueue
from node.backends.redis.presence import RedisPresence
from node.backends.redis.support import Client, RedisKeys, connect


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """The part of the node's settings the backends use."""

    redis_url: str | None  # None: in memory
    redis_cluster: bool  # the URL names a seed node of a Redis Cluster
    prefix: str  # of every key and channel
    node_id: str
    node_ttl: float  # seconds after its last heartbeat that a dead node's users leave
    history: int  # messages a room keeps
    history_bytes: int  # bytes of messages a room keeps
    rooms: RoomPolicy
    recorded: Recorded = Recorded()  # the events queued for webhooks (Redis only)


@dataclass(frozen=True, slots=True)
class Backends:
    broker: Broker
    presence: Presence
    coordination: Coordination
    events: EventQueue | None  # the webhooks' queue (None: no webhooks)
    redis: Client | None  # the Redis client they share, closed after them (None: in memory)


def open_backends(settings: BackendSettings, announcements: Announcements) -> Backends:
    """The backends `settings` name; `announcements` makes the client protocol's presence
    events, which the backends complete and publish."""
    if settings.redis_url is None:
        return _in_memory(settings, announcements)
    # One client for the node: one slot map, which a failover noticed by any part updates
    # for every part (a shard's primary is left for its replica at once).
    redis = connect(settings.redis_url, settings.redis_cluster)
    prefix, node_id = settings.prefix, settings.node_id
    marks = Marks(redis, RedisKeys(prefix), settings.recorded) if settings.recorded.any else None
    return Backends(
        RedisBroker(redis, prefix, node_id, settings.history, settings.history_bytes, marks),
        RedisPresence(redis, prefix, node_id, settings.node_ttl, settings.rooms, announcements,
                      marks),
        RedisCoordination(redis, prefix, node_id, settings.node_ttl),
        None if marks is None else RedisEventQueue(redis, RedisKeys(prefix), node_id, marks),
        redis)


def _in_memory(settings: BackendSettings, announcements: Announcements) -> Backends:
    broker = MemoryBroker(capacity=settings.history, capacity_bytes=settings.history_bytes)
    presence = MemoryPresence(settings.rooms, announcements, broker.deliver, broker.drop_room)
    return Backends(broker, presence, MemoryCoordination(settings.node_id), None, None)
