"""What travels between the nodes and the backend: the envelope of one room event, and the
templates of client JSON that the backend completes with the numbers it assigns.

Envelope: on the wire (Redis Pub/Sub) a msgpack array `[room, seq, exclude, payload,
presence, epoch]`. `seq` is a message's place in the room's history (`UNSEQUENCED` for
presence events) and `epoch` the history it is numbered in ("" for presence events): a
receiver that knew another epoch learns at once that the history forked (`base_of`);
`presence` is a presence event's place among the room's membership changes (0 for
messages). The Redis scripts build the same array with `envelope` in
node/backends/redis/lua/lib/envelope.lua.

Template: client JSON with its numbers left out, as fragments: the backend writes the number
it assigned after each fragment and closes the object (`close`). A message's one number is
its seq; a presence event's are the room's member count and presence version after the
change. The backend never parses or builds client JSON: it only joins bytes, so nothing
below the handlers knows the client protocol. This module is the only user of msgpack.
"""

from __future__ import annotations

import msgpack
import msgspec

UNSEQUENCED = 0
FRAGMENT_SEPARATOR = b"\0"  # a stored template's fragments, joined: raw NUL is never in JSON

Template = tuple[bytes, ...]


class Publication(msgspec.Struct, frozen=True):
    """A room event ready for local fan-out.

    `payload` is the client JSON, complete; `exclude` names a session that must not receive
    it (the joiner does not get its own `user_joined`). One is made per envelope received: a
    msgspec struct costs about a tenth of a frozen dataclass to construct.
    """

    room: str
    seq: int
    payload: bytes
    exclude: str = ""
    presence: int = 0
    epoch: str = ""


def pack(publication: Publication) -> bytes:
    """The msgpack envelope of a publication."""
    return msgpack.packb([publication.room, publication.seq, publication.exclude,
                          publication.payload, publication.presence, publication.epoch])


def unpack(data: bytes) -> Publication:
    """One received envelope, decoded once; the payload stays bytes, ready to frame."""
    room, seq, exclude, payload, presence, epoch = msgpack.unpackb(data, raw=True)
    return Publication(room.decode(), seq, payload, exclude.decode(), presence, epoch.decode())


def base_of(epoch: str) -> int:
    """The last seq an epoch shares with the history it forked from: an epoch started by a
    fork (a failover, a Redis that lost messages) is named `<id>.<base>`; a room's first
    epoch is a bare id (base 0: it shares nothing)."""
    _, _, base = epoch.rpartition(".")
    return int(base) if base.isdigit() and "." in epoch else 0


def close(template: Template, *numbers: int) -> bytes:
    """The final JSON of a template: each fragment followed by its number, then `}`."""
    return b"".join(b"%b%d" % part for part in zip(template, numbers, strict=True)) + b"}"


def joined(template: Template) -> bytes:
    """A template as one string, for storing it beside the member it announces."""
    return FRAGMENT_SEPARATOR.join(template)


def split(stored: bytes) -> Template:
    return tuple(stored.split(FRAGMENT_SEPARATOR))


# `envelope`, `close` and `split` for the Redis scripts, which build envelopes and close
# templates atomically with what they store (tests/integration/test_envelope_lua.py holds the
# two sides together). Integers only: Lua 5.1 prints larger numbers with an exponent.
