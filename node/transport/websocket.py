"""The server side of one WebSocket (RFC 6455), kept small because there are many; its
frames are built and read with node.transport.frames.

aiohttp's WebSocketResponse keeps its HTTP request, a request handler, a reader queue and a
suspended handler coroutine alive for the life of every connection: about 16 KiB each. This
protocol object is all an idle connection holds besides its session (a few hundred bytes);
inbound frames arrive as callbacks, so an idle connection has no task and no coroutine.
No extensions are negotiated (no permessage-deflate): broadcast frames are built once and
written as the same bytes to every recipient.

Every byte a peer sends costs O(1) work: a partial frame waits until enough bytes are there
to finish it, a fragmented message keeps a running total, every frame takes a token from the
connection's frame budget, and a peer that does not read what it is sent stops being read.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from typing import Protocol, cast

from node.ratelimit import Rate
from node.transport.frames import (
    ABNORMAL, CONTROL_OPCODES, DATA_OPCODES, INVALID_TEXT, MAX_CONTROL_PAYLOAD,
    MESSAGE_TOO_BIG, NO_STATUS, NORMAL, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
    PROTOCOL_ERROR, SENDABLE_CLOSE_CODES, TRY_AGAIN_LATER, Flood, Fragmented, Violation,
    close_frame, frame, unmask,
)
from node.transport.output_budget import OutputBudget

class Peer(Protocol):
    """What the connection tells the session behind it."""

    def on_text(self, text: str) -> None: ...

    def on_binary(self, data: bytes) -> None: ...

    def on_closed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """What one peer may send and leave unread."""

    max_message: int  # bytes of one message, its fragments together
    max_fragments: int  # frames of one fragmented message
    frames: Rate  # frames per second and at once, control frames included
    max_buffer: int  # bytes queued to the peer before it is closed as too slow
    close_timeout: float  # seconds a close waits for the peer's answer
    output: OutputBudget  # what all peers of an address, and all of the node's, may queue


INBOX, WRITES = 1, 2  # why reading is held: the session is behind, the peer is not reading


class WebSocket(asyncio.Protocol):
    """One upgraded connection: parses client frames, writes server frames, closes cleanly.

    Every close the server starts completes the closing handshake: the close frame goes out,
    nothing more is delivered, and the peer's bytes are read and discarded until its close
    frame (or EOF) arrives or the close timeout passes; only then is TCP closed, so unread
    data never turns into a reset that hides the close code from the peer.
    """

    __slots__ = ("_transport", "_peer", "_limits", "_buffer", "_need", "_skip", "_fragments",
                 "_full_at", "_holds", "_close_sent",
                 "_discarding", "_disconnected", "_gone", "close_code", "_address", "_counted")

    def __init__(self, transport: asyncio.BaseTransport, limits: Limits, now: float,
                 address: str) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._address = address  # the client's, for the output budget
        self._counted = 0  # bytes of its queue the output budget counts
        self._peer: Peer | None = None
        self._limits = limits
        self._buffer: bytes | bytearray = b""  # an idle connection holds no bytearray
        self._need = 2  # bytes the buffer must hold before the next frame can be parsed
        self._skip = 0  # bytes of an oversized frame still to discard
        self._fragments: Fragmented | None = None
        self._full_at = now  # its frames' token bucket (see Rate)
        self._holds = 0
        self._close_sent = False
        self._discarding = False  # framing is lost: read and drop until the peer goes
        self._disconnected = False
        self._gone: asyncio.Future[None] | None = None  # made when someone waits for it
        self.close_code: int | None = None
        # A peer is not read while this much waits for it: a quarter of what gets it closed,
        # so that a burst does not hold back a reader that is merely a little behind.
        self._transport.set_write_buffer_limits(high=limits.max_buffer // 4)

    def start(self, peer: Peer, data: bytes) -> None:
        """Begin delivering to `peer`, with the bytes that came along with the handshake."""
        self._peer = peer
        if data:
            self.data_received(data)

    # --- writing ---------------------------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    def send(self, data: bytes) -> bool:
        """Queue complete frames; False when this write took the peer past --max-buffer
        (it is closed with 1013). Once closing, frames are dropped."""
        transport = self._transport
        if self._close_sent or transport.is_closing():
            return True
        transport.write(data)
        return self._within_buffer()

    def send_all(self, frames: list[bytes]) -> bool:
        """`send` for several frames, in one write."""
        transport = self._transport
        if self._close_sent or transport.is_closing():
            return True
        transport.writelines(frames)
        return self._within_buffer()

    def _within_buffer(self) -> bool:
        queued = self._transport.get_write_buffer_size()
        if queued == self._counted:  # a peer that keeps up: nothing queued, nothing counted
            return True
        self._counted = queued
        if queued > self._limits.max_buffer or not self._limits.output.account(
                self._address, self, queued):
            self.close(TRY_AGAIN_LATER, "Slow consumer")
            return False
        return True

    def queued(self) -> int:
        """Bytes waiting for the peer (the output budget's fresh count)."""
        self._counted = self._transport.get_write_buffer_size()
        return self._counted

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what is queued; the session ends now. The connection
        ends when the peer answers, or after the close timeout."""
        if not self._close_sent and not self._transport.is_closing():
            self._close_sent = True
            self.close_code = code
            self._transport.write(close_frame(code, reason))
            asyncio.get_running_loop().call_later(self._limits.close_timeout, self._hang_up)
            self._release(INBOX | WRITES)  # the peer's close frame must still be read
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
            await asyncio.wait_for(asyncio.shield(self._gone), 2 * self._limits.close_timeout)
        except TimeoutError:
            self._transport.abort()
            await asyncio.shield(self._gone)

    def _ended(self) -> None:
        """Tell the session, once, that nothing more will arrive."""
        peer, self._peer = self._peer, None
        if peer is not None:
            peer.on_closed()

    # --- flow control ----------------------------------------------------------------------

    def hold_reading(self) -> None:
        """The session is behind: stop reading until it catches up."""
        self._hold(INBOX)

    def release_reading(self) -> None:
        self._release(INBOX)

    def pause_writing(self) -> None:
        """The peer is not reading what it is sent: stop reading what it sends."""
        if not self._close_sent:
            self._hold(WRITES)

    def resume_writing(self) -> None:
        self._release(WRITES)
        self._limits.output.account(self._address, self, self.queued())  # it drained

    def _hold(self, reason: int) -> None:
        if not self._holds and not self._transport.is_closing():
            self._transport.pause_reading()
        self._holds |= reason

    def _release(self, reasons: int) -> None:
        if not self._holds & reasons:
            return
        self._holds &= ~reasons
        if not self._holds and not self._transport.is_closing():
            self._transport.resume_reading()

    # --- reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data, self._skip = data[self._skip:], 0
        buffer: bytes | bytearray
        if self._buffer:
            self._buffer += data  # a bytearray: grows in place
            buffer = self._buffer
            if len(buffer) < self._need:
                return  # a frame arriving in pieces is parsed once, when it is complete
        else:
            buffer = data  # the usual case, whole frames in one read: no copy
        try:
            used = self._parse(buffer)
        except Violation as violation:
            self._buffer = b""
            self._discarding = True
            self._fail(violation)
            if not self._transport.is_closing() and self._transport.can_write_eof():
                # Its close answer cannot be found in what follows: our FIN after the close
                # frame tells the peer to hang up, instead of the close timeout telling us.
                self._transport.write_eof()
            if isinstance(violation, Flood) and not self._transport.is_closing():
                self._transport.pause_reading()  # its bytes cost more than its close frame
            return
        if buffer is self._buffer:
            del cast(bytearray, buffer)[:used]  # a bytes buffer is never partly used
            if not self._buffer:
                self._buffer = b""
        elif used < len(buffer):
            self._buffer = bytearray(buffer[used:])

    def _parse(self, buffer: bytes | bytearray) -> int:
        """Handle every complete frame in `buffer`; returns how many bytes were used."""
        at, end = 0, len(buffer)
        while not self._transport.is_closing():
            if end - at < 2:
                self._need = 2
                break
            first, second = buffer[at], buffer[at + 1]
            opcode, size, head = first & 0x0F, second & 0x7F, 2
            self._check_header(first, second, opcode, size)
            if size == 126:
                head = 4
                size = struct.unpack_from("!H", buffer, at + 2)[0] if end - at >= 4 else -1
            elif size == 127:
                head = 10
                size = struct.unpack_from("!Q", buffer, at + 2)[0] if end - at >= 10 else -1
            if size < 0:
                self._need = head
                break
            start = at + head + 4
            if opcode in DATA_OPCODES and not self._takes(size):
                self._spend_frame()  # passing over frames costs too: a flood stops here
                if end - start < size:  # passed over as it arrives, never buffered
                    self._skip, at, self._need = size - (end - start), end, 2
                    break
                at = start + size
                continue
            if end - start < size:
                self._need = start - at + size
                break
            payload = buffer[start:start + size]
            mask = bytes(buffer[at + head:start])
            at = start + size
            try:
                self._on_frame(bool(first & 0x80), opcode, payload, mask)
            except Flood:
                raise
            except Violation as violation:  # framing is intact: read on, as closing
                self._fail(violation)
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

    def _takes(self, size: int) -> bool:
        """Whether a data frame of `size` bytes is read; one that would make its message too
        big fails the connection, and after a close data is only passed over."""
        if size >= 1 << 63:
            raise Violation(PROTOCOL_ERROR, "Frame length has its top bit set")
        if self._close_sent:
            return False
        held = self._fragments.size if self._fragments is not None else 0
        if held + size > self._limits.max_message:
            self._fail(Violation(MESSAGE_TOO_BIG, "Message too big"))
            return False
        return True

    def _on_frame(self, fin: bool, opcode: int, payload: bytearray | bytes, mask: bytes
                  ) -> None:
        if opcode == OP_CLOSE:
            self._on_close(unmask(payload, mask))
            return
        self._spend_frame()
        if self._close_sent:
            return  # closing: only the peer's close frame matters now
        if opcode in CONTROL_OPCODES:
            if opcode == OP_PING:
                self.send(frame(OP_PONG, bytes(unmask(payload, mask))))
            return
        self._on_data(fin, opcode, unmask(payload, mask))

    def _spend_frame(self) -> None:
        full_at = self._limits.frames.take(self._full_at, time.monotonic())
        if full_at is None:
            raise Flood()
        self._full_at = full_at

    def _on_data(self, fin: bool, opcode: int, payload: bytearray) -> None:
        message = self._fragments
        if (opcode == OP_CONTINUATION) == (message is None):
            raise Violation(PROTOCOL_ERROR, "Unexpected continuation or missing one")
        if message is None:
            if fin:
                self._on_message(opcode, payload)
                return
            message = self._fragments = Fragmented(opcode)
        if message.count >= self._limits.max_fragments:
            raise Violation(MESSAGE_TOO_BIG, "Too many fragments")
        message.add(payload, fin)
        if fin:
            self._fragments = None
            self._deliver(message)

    def _deliver(self, message: Fragmented) -> None:
        if self._peer is None:
            return
        if message.opcode == OP_BINARY:
            self._peer.on_binary(b"".join(message.parts))  # type: ignore[arg-type]
        else:
            self._peer.on_text("".join(message.parts))  # type: ignore[arg-type]

    def _on_message(self, opcode: int, payload: bytes | bytearray) -> None:
        if self._peer is None:
            return
        if opcode == OP_BINARY:
            self._peer.on_binary(bytes(payload))
            return
        try:
            text = payload.decode()
        except UnicodeDecodeError as error:
            raise Violation(INVALID_TEXT, "Invalid UTF-8 text") from error
        self._peer.on_text(text)

    def _on_close(self, payload: bytearray) -> None:
        """The peer closes: answer with its code (unless we closed first) and hang up; an
        invalid close frame is answered with the code for what is wrong with it."""
        reason = ""
        try:
            code = answer = self._peer_close_code(payload)
        except Violation as violation:
            code = answer = violation.code
            reason = str(violation)
        if not self._close_sent:
            self._close_sent = True
            self.close_code = code
            self._transport.write(close_frame(NORMAL if answer == NO_STATUS else answer, reason))
        self._transport.close()

    @staticmethod
    def _peer_close_code(payload: bytearray) -> int:
        """The code of a peer's close frame, validated as RFC 6455 section 7 says."""
        if not payload:
            return NO_STATUS
        if len(payload) == 1:
            raise Violation(PROTOCOL_ERROR, "Invalid close frame")
        code = struct.unpack_from("!H", payload)[0]
        if code not in SENDABLE_CLOSE_CODES:
            raise Violation(PROTOCOL_ERROR, f"Invalid close code {code}")
        try:
            payload[2:].decode()
        except UnicodeDecodeError as error:
            raise Violation(INVALID_TEXT, "Close reason is not UTF-8") from error
        return code

    def _fail(self, violation: Violation) -> None:
        """Close for a violation: the close frame goes out at once, then the peer's bytes are
        passed over (or, when framing is lost, dropped) until it answers or the close
        timeout passes."""
        self._fragments = None
        self.close(violation.code, str(violation))

    def eof_received(self) -> bool | None:
        return None  # the peer is done sending: close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL
        self._disconnected = True
        self._limits.output.forget(self._address, self)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        self._ended()
