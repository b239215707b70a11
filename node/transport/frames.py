"""The RFC 6455 frame codec: the handshake's answer, server frames, close frames, masking,
and the reassembly of a fragmented message. No state of a connection lives here (that is
node.transport.websocket); loadtest's raw clients build their frames with it too."""

from __future__ import annotations

import base64
import codecs
import hashlib
import struct

from aiohttp._websocket.helpers import websocket_mask  # aiohttp's C masking, when built

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
NORMAL, PROTOCOL_ERROR, NO_STATUS, ABNORMAL = 1000, 1002, 1005, 1006
INVALID_TEXT, POLICY_VIOLATION, MESSAGE_TOO_BIG, TRY_AGAIN_LATER = 1007, 1008, 1009, 1013
MAX_CONTROL_PAYLOAD = 125
MAX_REASON = MAX_CONTROL_PAYLOAD - 2
# Close codes a peer may send (RFC 6455 7.4.1 and the IANA registry): 1004-1006 and 1015
# are reserved, 1016-2999 unassigned, 3000-4999 for libraries and applications.
SENDABLE_CLOSE_CODES = frozenset((*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)))


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def switching_protocols(key: str) -> bytes:
    """The 101 response that completes the handshake."""
    return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode()


_HEAD = struct.Struct("!BB").pack
_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack
MASKED = 0x80


def header(opcode: int, size: int, mask_bit: int = 0) -> bytes:
    """A FIN frame's header up to its payload length; a client frame (`mask_bit` MASKED) has
    its masking key after it."""
    first = 0x80 | opcode
    if size < 126:
        return _HEAD(first, mask_bit | size)
    if size < 1 << 16:
        return _HEAD16(first, mask_bit | 126, size)
    return _HEAD64(first, mask_bit | 127, size)


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked server frame with FIN set: servers never mask, so it fits every client."""
    return header(opcode, len(payload)) + payload


def close_reason(reason: str) -> bytes:
    """The reason as UTF-8 that fits a close frame, cut on a character boundary."""
    return reason.encode()[:MAX_REASON].decode(errors="ignore").encode()


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + close_reason(reason))


def unmask(payload: bytes | bytearray, mask: bytes) -> bytearray:
    """The payload XORed with its 4-byte key (in C where aiohttp's extension is built)."""
    data = bytearray(payload)
    websocket_mask(mask, data)
    return data


class Violation(Exception):
    """The peer broke the protocol or a limit: close with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Flood(Violation):
    """The peer sends frames faster than its budget: stop reading it at all."""

    def __init__(self) -> None:
        super().__init__(POLICY_VIOLATION, "Too many frames")


class Fragmented:
    """A message arriving in fragments: counted, sized, and text decoded as it comes, so
    that invalid UTF-8 fails at the fragment that carries it."""

    __slots__ = ("opcode", "parts", "count", "size", "_decoder")

    def __init__(self, opcode: int) -> None:
        self.opcode = opcode
        self.parts: list[bytes | str] = []
        self.count = self.size = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")() if opcode == OP_TEXT else None

    def add(self, payload: bytearray, final: bool) -> None:
        self.count += 1
        self.size += len(payload)
        if self._decoder is None:
            self.parts.append(bytes(payload))
            return
        try:
            self.parts.append(self._decoder.decode(payload, final))
        except UnicodeDecodeError as error:
            raise Violation(INVALID_TEXT, "Invalid UTF-8 text") from error
