"""The JSON the node and the application exchange (docs/hooks.md): the publish and connect
hooks' requests and answers, and the webhooks' bodies. Every field's bound is here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

CODE = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
REASON = Annotated[str, msgspec.Meta(max_length=200)]
ROOMS = Annotated[list[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,64}$")]],
                  msgspec.Meta(max_length=1000)]


class MessageCheck(msgspec.Struct, rename="camel", omit_defaults=True):
    """The publish hook's request: a client's message, before the cluster accepts it."""

    room: str
    user_id: str
    name: str
    text: str
    client_id: str | None = None


class ConnectCheck(msgspec.Struct, rename="camel", omit_defaults=True):
    """The connect hook's request: a client's `auth` (anonymous mode)."""

    address: str  # the client's, as the node sees it through trusted proxies
    user_id: str | None = None  # set when the client resumed an identity (its token checked)
    name: str | None = None  # the name asked for
    token: str | None = None  # what the client sent as `token` without `userId`: your own


class Answer(msgspec.Struct, rename="camel", forbid_unknown_fields=False):
    """What a hook answers. Publish hook: accept, reject (`code`, `reason`) or replace
    (`text`). Connect hook: accept (maybe with `userId`, `name`, `rooms`) or reject."""

    result: Literal["accept", "reject", "replace"]
    code: CODE = "rejected"
    reason: REASON = ""
    text: str | None = None
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    name: str | None = None
    rooms: ROOMS | None = None


class WebhookBody(msgspec.Struct, omit_defaults=False):
    """A webhook: its `id` (also the webhook-id header: receivers deduplicate by it), type,
    room (null for user_banned from the cluster), ISO 8601 time and the event's data."""

    id: str
    type: str
    room: str | None
    timestamp: str
    data: dict[str, Any]


encode = msgspec.json.Encoder().encode
decode_answer: Callable[[bytes], Answer] = msgspec.json.Decoder(Answer).decode
