"""The broker seam: room pub/sub plus the per-room message log (seq and history).

Publishing a message assigns its seq, stores it and publishes it as one atomic step, so
history and the live stream always agree. Nothing above this seam knows how it is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from node.envelope import Publication

PublicationHandler = Callable[[Publication], None]


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """The newest messages of a room (JSON payloads, oldest first) and the room's last seq."""

    messages: list[bytes]
    seq: int


class Broker(Protocol):
    """Delivers room events to every subscribed node, this one included."""

    @property
    def ready(self) -> bool:
        """True while the broker can publish and deliver."""
        ...

    async def start(self, handler: PublicationHandler) -> None:
        """Connect and deliver every publication of a subscribed room to `handler`."""
        ...

    async def close(self) -> None:
        """Stop delivering and release connections."""
        ...

    async def subscribe(self, room: str) -> None:
        """Receive the room's publications; returns once delivery is active.

        Raises `node.errors.Unavailable`, like every method below, when the broker is down."""
        ...

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving the room's publications; never fails (repaired on reconnect)."""
        ...

    async def publish_message(self, room: str, template: bytes) -> int:
        """Assign the next seq, store the stamped message and publish it; returns the seq."""
        ...

    async def publish_event(self, room: str, payload: bytes, exclude: str = "") -> None:
        """Publish an unsequenced event (presence) to the room."""
        ...

    async def history(self, room: str, limit: int) -> HistoryWindow:
        """The newest `limit` stored messages of the room."""
        ...
