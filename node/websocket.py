"""The server side of one chat WebSocket (RFC 6455), kept small because there are many.

aiohttp's WebSocketResponse keeps its HTTP request, a request handler, a reader queue and a
suspended handler coroutine alive for the life of every connection: about 16 KiB each. This
protocol object is all an idle connection holds besides its session (a few hundred bytes);
inbound frames arrive as callbacks, so an idle connection has no task and no coroutine.
No extensions are negotiated (no permessage-deflate): broadcast frames are built once and
written as the same bytes to every recipient.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from typing import Protocol, cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
PROTOCOL_ERROR, INVALID_TEXT, MESSAGE_TOO_BIG, NO_STATUS = 1002, 1007, 1009, 1005
NORMAL, ABNORMAL = 1000, 1006
MAX_CONTROL_PAYLOAD = 125


class Peer(Protocol):
    """What the connection tells its session."""

    def on_text(self, text: str) -> None: ...

    def on_binary(self) -> None: ...

    def on_closed(self) -> None: ...


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


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason[:MAX_CONTROL_PAYLOAD - 2])


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte key, as one big-integer operation rather than a loop per byte."""
    size = len(payload)
    if not size:
        return payload
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


class Violation(Exception):
    """The peer broke the protocol: close with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class WebSocket(asyncio.Protocol):
    """One upgraded connection: parses client frames, writes server frames, closes cleanly."""

    __slots__ = ("_transport", "_peer", "_max_message", "_buffer", "_fragments", "_fragment_op",
                 "_close_sent", "_close_timeout", "_disconnected", "_gone", "close_code")

    def __init__(self, transport: asyncio.BaseTransport, max_message: int,
                 close_timeout: float) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._peer: Peer | None = None
        self._max_message = max_message
        self._close_timeout = close_timeout
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragment_op = OP_TEXT
        self._close_sent = False
        self._disconnected = False
        self._gone: asyncio.Future[None] | None = None  # made when someone waits for it
        self.close_code: int | None = None
        self._transport.set_protocol(self)

    def start(self, peer: Peer, data: bytes) -> None:
        """Begin delivering to `peer`, with the bytes that came along with the handshake."""
        self._peer = peer
        if data:
            self.data_received(data)

    # --- writing ---------------------------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    @property
    def closing(self) -> bool:
        return self._close_sent or self._transport.is_closing()

    def close(self, code: int, reason: bytes = b"") -> None:
        """Send a close frame after what is queued; the session ends now. The connection
        ends when the peer answers, or after the close timeout."""
        if not self._close_sent and not self._transport.is_closing():
            self._close_sent = True
            self.close_code = code
            self._transport.write(close_frame(code, reason))
            asyncio.get_running_loop().call_later(self._close_timeout, self._hang_up)
        self._ended()

    def _hang_up(self) -> None:
        """The peer did not answer the close in time. One that has read everything gets a
        clean close; one that still has not read what is queued loses it, rather than pin
        up to --max-buffer of memory for as long as it keeps the socket open."""
        if self._transport.get_write_buffer_size():
            self._transport.abort()
        else:
            self._transport.close()

    async def gone(self) -> None:
        """Wait until the connection has ended. An open transport would keep the event loop
        from closing, so one that is still there after twice the close timeout (a peer that
        neither answers nor reads) is aborted."""
        if self._disconnected:
            return
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._gone), 2 * self._close_timeout)
        except TimeoutError:
            self._transport.abort()
            await asyncio.shield(self._gone)

    def _ended(self) -> None:
        """Tell the session, once, that nothing more will arrive."""
        peer, self._peer = self._peer, None
        if peer is not None:
            peer.on_closed()

    # --- reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        try:
            used = self._parse(buffer)
        except Violation as violation:
            self._buffer = b""
            self._fail(violation)
            return
        self._buffer = buffer[used:]

    def _parse(self, buffer: bytes) -> int:
        """Handle every complete frame in `buffer`; returns how many bytes were used."""
        at, end = 0, len(buffer)
        while end - at >= 2 and not self._transport.is_closing():
            first, second = buffer[at], buffer[at + 1]
            opcode, size, head = first & 0x0F, second & 0x7F, 2
            self._check_header(first, second, opcode, size)
            if size == 126:
                if end - at < 4:
                    break
                size, head = struct.unpack_from("!H", buffer, at + 2)[0], 4
            elif size == 127:
                if end - at < 10:
                    break
                size, head = struct.unpack_from("!Q", buffer, at + 2)[0], 10
            if opcode in DATA_OPCODES and self._buffered_size() + size > self._max_message:
                raise Violation(MESSAGE_TOO_BIG, "Message too big")
            if end - at < head + 4 + size:
                break
            mask = buffer[at + head:at + head + 4]
            payload = unmask(buffer[at + head + 4:at + head + 4 + size], mask)
            at += head + 4 + size
            self._on_frame(bool(first & 0x80), opcode, payload)
        return at

    def _check_header(self, first: int, second: int, opcode: int, size: int) -> None:
        if first & 0x70:
            raise Violation(PROTOCOL_ERROR, "Reserved bits set")
        if not second & 0x80:
            raise Violation(PROTOCOL_ERROR, "Client frames must be masked")
        if opcode not in DATA_OPCODES and opcode not in CONTROL_OPCODES:
            raise Violation(PROTOCOL_ERROR, f"Unknown opcode {opcode}")
        if opcode in CONTROL_OPCODES and (not first & 0x80 or size > MAX_CONTROL_PAYLOAD):
            raise Violation(PROTOCOL_ERROR, "Fragmented or oversized control frame")

    def _buffered_size(self) -> int:
        return sum(map(len, self._fragments)) if self._fragments else 0

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode in CONTROL_OPCODES:
            self._on_control(opcode, payload)
            return
        if (opcode == OP_CONTINUATION) == (self._fragments is None):
            raise Violation(PROTOCOL_ERROR, "Unexpected continuation or missing one")
        if not fin:
            if self._fragments is None:
                self._fragments, self._fragment_op = [], opcode
            self._fragments.append(payload)
            return
        if self._fragments is not None:
            payload, opcode = b"".join([*self._fragments, payload]), self._fragment_op
            self._fragments = None
        self._on_message(opcode, payload)

    def _on_message(self, opcode: int, payload: bytes) -> None:
        if self._close_sent or self._peer is None:
            return  # closing: only the peer's close frame matters now
        if opcode == OP_BINARY:
            self._peer.on_binary()
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError as error:
            raise Violation(INVALID_TEXT, "Invalid UTF-8 text") from error
        self._peer.on_text(text)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._transport.write(frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self._on_close(payload)

    def _on_close(self, payload: bytes) -> None:
        """The peer closes: answer with its code (unless we closed first) and hang up."""
        if len(payload) == 1:
            raise Violation(PROTOCOL_ERROR, "Invalid close frame")
        code = struct.unpack_from("!H", payload)[0] if payload else NO_STATUS
        if not self._close_sent:
            self._close_sent = True
            self.close_code = code
            self._transport.write(close_frame(code if payload else NORMAL))
        self._transport.close()

    def _fail(self, violation: Violation) -> None:
        if not self._close_sent:
            self._close_sent = True
            self.close_code = violation.code
            self._transport.write(close_frame(violation.code, str(violation).encode()))
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL
        self._disconnected = True
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        self._ended()
