"""The parts of one running node, wired together, and whether it takes new connections."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from node.backends.broker import Broker
from node.backends.coordination import Coordination
from node.backends.envelope import Template
from node.backends.memory.broker import MemoryBroker
from node.backends.memory.coordination import MemoryCoordination
from node.backends.memory.presence import MemoryPresence
from node.backends.presence import Member, Presence, RoomPolicy
from node.backends.redis.broker import RedisBroker
from node.backends.redis.coordination import RedisCoordination
from node.backends.redis.presence import RedisPresence
from node.backends.redis.support import Client, connect
from node.background import Supervised
from node.chat.directory import Directory
from node.chat.handlers import Handlers
from node.chat.heartbeat import run_heartbeat
from node.chat.hub import Hub
from node.chat.protocol import presence_templates
from node.config import Settings
from node.drain import Drainer
from node.liveness import Liveness
from node.metrics import Metrics
from node.transport.admission import Admission
from node.transport.connections import Connections
from node.transport.echo import EchoSockets
from node.transport.output_budget import OutputBudget


@dataclass(slots=True)
class Node:
    settings: Settings
    broker: Broker
    presence: Presence
    coordination: Coordination
    hub: Hub
    handlers: Handlers
    liveness: Liveness
    drain: Drainer
    connections: Connections
    echoes: EchoSockets
    directory: Directory
    metrics: Metrics
    admission: Admission
    output: OutputBudget
    heartbeat: Supervised  # the node's pings (node.chat.heartbeat), restarted if they fail
    redis: Client | None  # the backends' Redis client, closed after them (None: in memory)
    instance: str = field(default_factory=lambda: secrets.token_hex(6))  # this process

    def unready_reason(self) -> str | None:
        """Why this node should not take new connections, or None when it should."""
        if self.connections.full:
            return "connection limit reached"
        return self.unserving_reason()

    def unserving_reason(self) -> str | None:
        """Why this node cannot serve a chat session now (its socket already counted)."""
        if self.drain.active:
            return "draining"
        if not self.broker.ready:
            return "broker unavailable"
        if not self.liveness.healthy:
            return "presence upkeep failing"
        if not self.heartbeat.healthy:
            return "heartbeat failing"
        return None


NODE = web.AppKey("node", Node)


def build_node(settings: Settings) -> Node:
    """A node on the backends its settings name (in memory when there is no Redis URL)."""
    broker: Broker
    presence: Presence
    coordination: Coordination
    redis: Client | None = None
    policy = RoomPolicy(settings.fixed_rooms, settings.max_rooms,
                        settings.user_rooms_per_hour, settings.room_ttl, settings.presence_limit,
                        settings.address_rooms_per_hour)

    def announcements(room: str, member: Member) -> tuple[Template, Template]:
        """The client protocol's presence events, which the backends complete."""
        return presence_templates(room, member.id, member.name)

    if settings.redis_url is None:
        memory = MemoryBroker(capacity=settings.history, capacity_bytes=settings.history_bytes)
        broker = memory
        presence = MemoryPresence(policy, announcements, memory.deliver, memory.drop_room)
        coordination = MemoryCoordination(settings.node_id)
    else:
        # One client for the node: one slot map, which a failover noticed by any part
        # updates for every part (a shard's primary is left for its replica at once).
        redis = connect(settings.redis_url, settings.redis_cluster)
        prefix, node_id = settings.redis_prefix, settings.node_id
        broker = RedisBroker(redis, prefix, node_id, settings.history, settings.history_bytes)
        presence = RedisPresence(redis, prefix, node_id, settings.node_ttl, policy,
                                 announcements)
        coordination = RedisCoordination(redis, prefix, node_id, settings.node_ttl)
    metrics = Metrics()
    hub = Hub(broker, settings.history, metrics, settings.presence_limit,
              settings.presence_interval)
    liveness = Liveness(presence, coordination, hub, settings.node_ttl)
    hub.on_reconnect(liveness.resync)  # shared state may have forgotten this node's members
    directory = Directory(presence)
    admission = Admission(settings.handshake_backlog, settings.handshake_timeout)
    handlers = Handlers(settings, hub, broker, presence, coordination, directory, metrics,
                        admission)
    drain = Drainer(settings, hub, coordination, handlers.departures)
    connections = Connections(settings.max_connections, settings.max_connections_per_address)
    output = OutputBudget(settings.max_address_output, settings.max_node_output)
    heartbeat = Supervised("heartbeat", functools.partial(run_heartbeat, hub, settings),
                           settle=settings.ping_interval)
    node = Node(settings, broker, presence, coordination, hub, handlers, liveness, drain,
                connections, EchoSockets(), directory, metrics, admission, output, heartbeat,
                redis)
    _watch(node)
    return node


def _watch(node: Node) -> None:
    """The gauges Prometheus reads from the node's state when it scrapes."""
    metrics = node.metrics
    metrics.watch_each("chat_sockets", "Open sockets by kind", "kind", {
        kind: functools.partial(_sockets_of_kind, node.connections, kind)
        for kind in node.connections.by_kind()})
    metrics.watch("chat_sessions", "Chat WebSocket sessions", lambda: len(node.hub.sessions))
    metrics.watch("chat_rooms_local", "Rooms with a member on this node",
                  lambda: node.hub.room_count)
    metrics.watch("chat_broker_ready", "1 while the node can reach Redis (or runs embedded)",
                  lambda: float(node.broker.ready))
    metrics.watch("chat_draining", "1 while the node drains", lambda: float(node.drain.active))
    metrics.watch("chat_handshakes_unfinished", "Chat sessions between their upgrade and their "
                  "first room_joined", lambda: node.admission.unfinished)
    metrics.watch("chat_ready", "1 while /readyz answers 200",
                  lambda: float(node.unready_reason() is None))
    metrics.watch("chat_output_queued_bytes", "Bytes queued to peers that have not read them "
                  "(as last counted), against --max-node-output", lambda: node.output.total)


def _sockets_of_kind(connections: Connections, kind: str) -> float:
    return connections.by_kind()[kind]
