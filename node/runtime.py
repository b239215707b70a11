"""The parts of one running node, wired together, and whether it takes new connections."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from node.backends.broker import Broker
from node.backends.coordination import Coordination
from node.backends.envelope import Template
from node.backends.factory import BackendSettings, open_backends
from node.backends.presence import Member, Presence, RoomPolicy
from node.backends.redis.support import Client
from node.background import Supervised
from node.chat.directory import Directory
from node.chat.handlers import ChatLimits, Handlers
from node.chat.heartbeat import run_heartbeat
from node.chat.hub import Hub
from node.chat.moderation import Moderation
from node.chat.protocol import presence_templates
from node.chat.session import SessionLimits
from node.config import Settings, jwt_verifier
from node.drain import Drainer
from node.liveness import Liveness
from node.metrics import Metrics
from node.ratelimit import Rate
from node.transport.admission import Admission
from node.transport.connections import Connections
from node.transport.echo import EchoSockets
from node.transport.output_budget import OutputBudget


@dataclass(slots=True)
class Node:
    settings: Settings
    session_limits: SessionLimits  # what each connection may send
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
    moderation: Moderation  # cluster-wide disconnects and bans
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
    backends = open_backends(_backend_settings(settings), _announcements)
    broker, presence, coordination = backends.broker, backends.presence, backends.coordination
    metrics = Metrics()
    hub = Hub(broker, settings.history, metrics, settings.presence_limit,
              settings.presence_interval)
    liveness = Liveness(presence, coordination, hub, settings.node_ttl)
    hub.on_reconnect(liveness.resync)  # shared state may have forgotten this node's members
    directory = Directory(presence)
    admission = Admission(settings.handshake_backlog, settings.handshake_timeout)
    handlers = Handlers(_chat_limits(settings), jwt_verifier(settings), hub, broker, presence,
                        coordination, directory, metrics, admission)
    drain = Drainer(settings.node_id, settings.drain_window, hub, coordination,
                    handlers.departures)
    connections = Connections(settings.max_connections, settings.max_connections_per_address)
    output = OutputBudget(settings.max_address_output, settings.max_node_output)
    heartbeat = Supervised("heartbeat", functools.partial(
        run_heartbeat, hub, settings.ping_interval, settings.ping_timeout),
        settle=settings.ping_interval)
    moderation = Moderation(hub, broker, coordination, handlers.kick)
    node = Node(settings, session_limits(settings), broker, presence, coordination, hub,
                handlers, liveness, drain, connections, EchoSockets(), directory, metrics,
                admission, output, heartbeat, moderation, backends.redis)
    _watch(node)
    return node


def _announcements(room: str, member: Member) -> tuple[Template, Template]:
    """The client protocol's presence events, which the backends complete."""
    return presence_templates(room, member.id, member.name)


def _backend_settings(settings: Settings) -> BackendSettings:
    rooms = RoomPolicy(settings.fixed_rooms, settings.max_rooms, settings.user_rooms_per_hour,
                       settings.room_ttl, settings.presence_limit,
                       settings.address_rooms_per_hour)
    return BackendSettings(settings.redis_url, settings.redis_cluster, settings.redis_prefix,
                           settings.node_id, settings.node_ttl, settings.history,
                           settings.history_bytes, rooms)


def _chat_limits(settings: Settings) -> ChatLimits:
    return ChatLimits(
        settings.node_id, settings.history, settings.history_window,
        settings.history_reply_bytes, settings.history_cache_bytes, settings.presence_grace,
        (settings.user_rate, settings.user_burst), (settings.address_rate,
                                                    settings.address_burst),
        settings.address_identities_per_minute, settings.max_text, settings.client_id_window)


def session_limits(settings: Settings) -> SessionLimits:
    """What each connection may send, one object for every session of the node."""
    return SessionLimits(Rate(settings.rate, settings.burst),
                         Rate(settings.join_rate, settings.join_burst),
                         settings.flood_limit, settings.flood_window)


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
