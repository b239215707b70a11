"""The parts of one running node, wired together, and whether it takes new connections."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field

from aiohttp import web

from node.backends.broker import Broker
from node.backends.broker import CONTROL
from node.backends.coordination import Coordination
from node.backends.event_queue import EventQueue, Recorded
from node.backends.envelope import Template
from node.backends.factory import BackendSettings, open_backends
from node.backends.presence import Member, Presence, RoomPolicy
from node.backends.redis.support import Client
from node.background import Supervised
from node.chat.directory import Directory
from node.chat.handlers import ChatLimits, Handlers
from node.chat.heartbeat import run_heartbeat
from node.chat.hub import Hub
from node.chat.moderation import Banned, Moderation
from node.chat.protocol import presence_templates
from node.chat.session import SessionLimits
from node.config import Settings, jwt_verifier
from node.drain import Drainer
from node.hooks.application import ApplicationHooks, HookSettings
from node.hooks.caller import Caller
from node.hooks.delivery import Deliverer, DeliverySettings
from node.hooks.endpoints import Endpoint, parse_endpoint, recorded_by
from node.hooks.events import ban_payload
from node.hooks.signing import Signer
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
    caller: Caller | None  # the hooks' and webhooks' HTTP client (None: no hook configured)
    deliverer: Deliverer | None  # this node's share of the webhooks (None: no webhooks)
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
    caller = (None if settings.hook_secret is None else
              Caller(Signer(settings.hook_secret), settings.publish_hook_concurrency))
    metrics = Metrics()
    hub = Hub(broker, settings.history, metrics, settings.presence_limit,
              settings.presence_interval)
    liveness = Liveness(presence, coordination, hub, settings.node_ttl)
    hub.on_reconnect(liveness.resync)  # shared state may have forgotten this node's members
    directory = Directory(presence)
    admission = Admission(settings.handshake_backlog, settings.handshake_timeout)
    handlers = Handlers(_chat_limits(settings), jwt_verifier(settings), hub, broker, presence,
                        coordination, directory, metrics, admission,
                        ApplicationHooks(caller, _hook_settings(settings)))
    drain = Drainer(settings.node_id, settings.drain_window, hub, coordination,
                    handlers.departures)
    connections = Connections(settings.max_connections, settings.max_connections_per_address)
    output = OutputBudget(settings.max_address_output, settings.max_node_output)
    heartbeat = Supervised("heartbeat", functools.partial(
        run_heartbeat, hub, settings.ping_interval, settings.ping_timeout),
        settle=settings.ping_interval)
    events = backends.events
    moderation = Moderation(hub, broker, coordination, handlers.kick,
                            *([_ban_events(events)] if events and _recorded(settings).bans
                              else []))
    deliverer = None if events is None or caller is None else Deliverer(
        events, caller, _delivery_settings(settings), coordination.live_nodes)
    node = Node(settings, session_limits(settings), broker, presence, coordination, hub,
                handlers, liveness, drain, connections, EchoSockets(), directory, metrics,
                admission, output, heartbeat, moderation, backends.redis, caller, deliverer)
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
                           settings.history_bytes, rooms, _recorded(settings))


def _recorded(settings: Settings) -> Recorded:
    return recorded_by(_endpoints(settings))


def _endpoints(settings: Settings) -> tuple[Endpoint, ...]:
    return tuple(parse_endpoint(url) for url in settings.webhook_url)


def _hook_settings(settings: Settings) -> HookSettings:
    return HookSettings(settings.publish_hook or None, settings.connect_hook or None,
                        settings.publish_hook_timeout, settings.publish_hook_failure == "accept")


def _delivery_settings(settings: Settings) -> DeliverySettings:
    return DeliverySettings(_endpoints(settings), settings.webhook_timeout,
                            settings.webhook_max_age, settings.webhook_max_backoff,
                            settings.webhook_concurrency, settings.webhook_dead_max)


def _ban_events(events: EventQueue) -> Banned:
    """Bans queued for the webhooks (user_banned): a room's in the room's queue, the
    cluster's in the control channel's."""
    async def banned(user_id: str, until: float, room: str) -> None:
        await events.append(room or CONTROL, ban_payload(user_id, until, room))
    return banned


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
    if node.caller is not None:
        metrics.hook_calls(node.caller.seconds, node.caller.failures)
    if node.deliverer is not None:
        _watch_webhooks(node.deliverer, metrics, _endpoints(node.settings))
    metrics.watch("chat_output_queued_bytes", "Bytes queued to peers that have not read them "
                  "(as last counted), against --max-node-output", lambda: node.output.total)


def _sockets_of_kind(connections: Connections, kind: str) -> float:
    return connections.by_kind()[kind]


def _watch_webhooks(deliverer: Deliverer, metrics: Metrics, endpoints: tuple[Endpoint, ...]
                    ) -> None:
    metrics.webhook_results = deliverer.results
    metrics.watch("chat_webhook_queue_events", "Room events queued for webhooks in the "
                  "partitions this node delivers, not yet had by every endpoint (counted "
                  "every few seconds)", lambda: deliverer.queued)
    metrics.watch("chat_webhook_partitions", "Webhook partitions this node delivers",
                  lambda: deliverer.partitions)
    metrics.watch_each("chat_webhook_oldest_seconds", "Age of the oldest event this node "
                       "holds back for an endpoint after a failed delivery (0: none)",
                       "endpoint", {e.url: functools.partial(deliverer.oldest, e)
                                    for e in endpoints})
