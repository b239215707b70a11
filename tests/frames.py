"""Client WebSocket frames as tests write them, honest or not."""

from __future__ import annotations

import asyncio
import base64
import os
import struct


def client(opcode: int, payload: bytes, fin: bool = True, masked: bool = True,
           rsv: int = 0, declared: int | None = None, mask: bytes | None = None) -> bytes:
    """A client frame, masked with a random key unless told otherwise; `declared` puts
    another length than the payload's in the header (a lying client)."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload) if declared is None else declared
    if size < 126:
        head = struct.pack("!BB", first, (0x80 if masked else 0) | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, size)
    else:
        head = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, size)
    if not masked:
        return head + payload
    mask = os.urandom(4) if mask is None else mask
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def upgrade(port: int, headers: str = "", path: str = "/ws") -> tuple[int, bytes]:
    """Send one WebSocket upgrade to 127.0.0.1:`port` (`headers`: extra CRLF-ended lines,
    Host included if wanted, else Host: chat); returns the status and what followed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    host = "" if "host:" in headers.lower() else "Host: chat\r\n"
    writer.write((f"GET {path} HTTP/1.1\r\n{host}Upgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  f"Sec-WebSocket-Key: {key}\r\n{headers}\r\n").encode())
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        rest = await asyncio.wait_for(reader.read(4096), 5) if b" 101 " not in line else b""
    finally:
        writer.close()
    return int(line.split()[1]), rest
