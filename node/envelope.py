"""The inter-node envelope: one room event as every subscribed node receives it.

On the wire (Redis Pub/Sub) an envelope is a msgpack array
`[room, seq, exclude, payload, origin]`; the Redis broker's publish script builds the same
array for messages. This module is the only place msgpack is used.
"""

from __future__ import annotations

import msgpack
import msgspec

UNSEQUENCED = 0


class Publication(msgspec.Struct, frozen=True):
    """A room event ready for local fan-out.

    `payload` is the client JSON, encoded once by the publisher; `seq` is the room's message
    sequence number, or `UNSEQUENCED` for presence events; `exclude` names a session that must
    not receive it (the joiner does not get its own `user_joined`). One is made per envelope
    received: a msgspec struct costs about a tenth of a frozen dataclass to construct.
    """

    room: str
    seq: int
    payload: bytes
    exclude: str = ""


def pack(publication: Publication, origin: str) -> bytes:
    """The msgpack envelope of a publication sent by node `origin`."""
    return msgpack.packb(
        [publication.room, publication.seq, publication.exclude, publication.payload, origin]
    )


def unpack(data: bytes) -> Publication:
    """One received envelope, decoded once; the payload stays bytes, ready to frame."""
    room, seq, exclude, payload, _origin = msgpack.unpackb(data, raw=True)
    return Publication(room.decode(), seq, payload, exclude.decode())
