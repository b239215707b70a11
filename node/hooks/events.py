"""Webhook bodies from queued room events: the events the room's members got, told the
application's way (docs/hooks.md). One member's joining an empty room is two webhooks,
member_joined and room_occupied; its leaving it empty, member_left and room_vacated."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgspec

from node.backends.event_queue import QueuedEvent
from node.hooks.wire import WebhookBody, encode

_decode = msgspec.json.decode


def iso(at_ms: int) -> str:
    """An event's time as ISO 8601 in UTC, to the millisecond."""
    seconds, ms = divmod(at_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def webhooks(room: str, event: QueuedEvent) -> Iterator[tuple[str, str, bytes]]:
    """(type, webhook id, body) of each webhook the event makes. A replayed one is its
    stored body, under its first id."""
    if event.webhook_id:
        kind = _decode(event.payload).get("type", "")
        yield kind, event.webhook_id, event.payload
        return
    payload: dict[str, Any] = _decode(event.payload)
    told = payload.pop("room", None) or None  # a ban from the whole cluster has none
    for kind, data in _told(payload):
        webhook_id = f"evt_{event.id}_{kind}_{room}"
        yield kind, webhook_id, encode(WebhookBody(webhook_id, kind, told, iso(event.at_ms),
                                                   data))


def _told(payload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = payload.pop("type", "")
    if kind == "message":
        yield "message", payload
    elif kind == "message_deleted":
        yield "message_deleted", payload
    elif kind in ("user_joined", "user_left"):
        yield from _membership(kind == "user_joined", payload)
    elif kind == "user_banned":
        yield "user_banned", payload


def _membership(joined: bool, payload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    count, version = payload["userCount"], payload["presence"]
    member = {"userId": payload["userId"], "name": payload["user"], "userCount": count,
              "presence": version}
    yield ("member_joined" if joined else "member_left"), member
    if joined and count == 1:
        yield "room_occupied", {"userCount": 1, "presence": version}
    if not joined and count == 0:
        yield "room_vacated", {"userCount": 0, "presence": version}


def ban_payload(user_id: str, until: float, room: str) -> bytes:
    """The queued event of a ban (server API `disconnect` or `kick` with `until`): from the
    cluster (`room` "") or from one room."""
    return encode({"type": "user_banned", "room": room or None, "userId": user_id,
                   "until": iso(int(until * 1000))})
