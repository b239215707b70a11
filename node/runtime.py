"""The parts of one running node, wired together, and whether it takes new connections."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from node.broker import Broker
from node.broker_memory import MemoryBroker
from node.config import Settings
from node.handlers import Handlers
from node.hub import Hub
from node.presence import Presence
from node.presence_memory import MemoryPresence


@dataclass(slots=True)
class Node:
    settings: Settings
    broker: Broker
    presence: Presence
    hub: Hub
    handlers: Handlers
    draining: bool = False

    def unready_reason(self) -> str | None:
        """Why this node should not take new connections, or None when it should."""
        if self.draining:
            return "draining"
        if not self.broker.ready:
            return "broker unavailable"
        if len(self.hub.sessions) >= self.settings.max_connections:
            return "connection limit reached"
        return None


NODE = web.AppKey("node", Node)


def build_node(settings: Settings) -> Node:
    """A node on the backends its settings name (in memory when there is no Redis URL)."""
    broker = MemoryBroker(capacity=settings.history)
    presence = MemoryPresence()
    hub = Hub(broker)
    return Node(settings, broker, presence, hub, Handlers(settings, hub, broker, presence))
