"""Webhook endpoints as configured (`--webhook-url URL#event,event`) and the event types."""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass

from node.backends.event_queue import Recorded

# Every type a webhook may carry (docs/hooks.md).
EVENT_TYPES = ("room_occupied", "room_vacated", "member_joined", "member_left", "message",
               "message_deleted", "user_banned")
PRESENCE_TYPES = frozenset({"room_occupied", "room_vacated", "member_joined", "member_left"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One URL that receives webhooks, and the event types it wants."""

    url: str  # without the fragment that named the events
    events: frozenset[str]

    @property
    def key(self) -> str:
        """A short stable name of the URL: its progress and dead letters are kept under it."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


def parse_endpoint(spec: str) -> Endpoint:
    """`URL` or `URL#type,type`: an http(s) URL, and the events it wants (all when none are
    named). ValueError names what is wrong."""
    url, _, fragment = spec.partition("#")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{spec!r} is not an http(s) URL")
    events = frozenset(filter(None, fragment.split(","))) or frozenset(EVENT_TYPES)
    if unknown := sorted(events.difference(EVENT_TYPES)):
        raise ValueError(f"{spec!r}: unknown event {', '.join(unknown)} (known: "
                         f"{', '.join(EVENT_TYPES)})")
    return Endpoint(url, events)


def recorded_by(endpoints: tuple[Endpoint, ...]) -> Recorded:
    """The events the backend must queue for these endpoints (none that none wants)."""
    wanted = frozenset[str]().union(*(endpoint.events for endpoint in endpoints))
    return Recorded("message" in wanted, "message_deleted" in wanted,
                    bool(wanted & PRESENCE_TYPES), "user_banned" in wanted)
