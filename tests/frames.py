"""Client WebSocket frames as tests write them, honest or not."""

from __future__ import annotations

import os
import struct


def client(opcode: int, payload: bytes, fin: bool = True, masked: bool = True,
           rsv: int = 0) -> bytes:
    """A client frame, masked with a random key unless told otherwise."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, (0x80 if masked else 0) | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, size)
    else:
        head = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
