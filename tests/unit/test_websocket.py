"""The server side of RFC 6455 as the node speaks it: frames in, frames out, closes."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from node.server import bad_request, parse_upgrade
from node.websocket import WebSocket, accept_key, close_frame, frame

MAX = 100


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.aborted = False
        self.lost = False
        self.unsent = 0  # bytes the peer has not read yet
        self.protocol: object = None

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def _lose(self) -> None:
        """As a real transport: closing now, connection_lost on the next loop iteration."""
        self.closed = True
        if not self.lost:
            self.lost = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def get_write_buffer_size(self) -> int:
        return self.unsent


class Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.binaries = 0
        self.ended = 0

    def on_text(self, text: str) -> None:
        self.texts.append(text)

    def on_binary(self) -> None:
        self.binaries += 1

    def on_closed(self) -> None:
        self.ended += 1


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


async def connection(close_timeout: float = 1.0) -> tuple[WebSocket, FakeTransport, Recorder]:
    transport, peer = FakeTransport(), Recorder()
    ws = WebSocket(transport, MAX, close_timeout)  # type: ignore[arg-type]
    ws.start(peer, b"")
    return ws, transport, peer


def closed_with(transport: FakeTransport, code: int) -> bool:
    at = transport.written.find(b"\x88")
    return transport.closed and at >= 0 and struct.unpack_from(
        "!H", transport.written, at + 2)[0] == code


async def test_text_frames_arrive_in_order_however_the_reads_split_them() -> None:
    ws, _, peer = await connection()
    stream = b"".join(client(0x1, f"héllo {n}".encode() * n) for n in range(1, 8))
    for start in range(0, len(stream), 7):
        ws.data_received(stream[start:start + 7])
    assert peer.texts == [f"héllo {n}" * n for n in range(1, 8)]


async def test_fragments_are_joined_and_control_frames_may_come_between() -> None:
    ws, transport, peer = await connection()
    ws.data_received(client(0x1, b"he", fin=False) + client(0x9, b"!")
                     + client(0x0, b"ll", fin=False) + client(0x0, b"o"))
    assert peer.texts == ["hello"]
    assert transport.written == frame(0xA, b"!")  # the ping answered with its payload


async def test_a_message_of_exactly_the_limit_is_accepted_one_more_byte_is_1009() -> None:
    ws, transport, peer = await connection()
    ws.data_received(client(0x1, b"x" * MAX))
    assert peer.texts == ["x" * MAX]
    ws.data_received(client(0x1, b"x" * 60, fin=False) + client(0x0, b"x" * 41))
    assert closed_with(transport, 1009)


async def test_binary_frames_go_to_the_session_as_such() -> None:
    ws, _, peer = await connection()
    ws.data_received(client(0x2, b"\x00\x01"))
    assert peer.binaries == 1 and peer.texts == []


@pytest.mark.parametrize(("data", "code"), [
    (client(0x1, b"x", masked=False), 1002),  # clients must mask
    (client(0x1, b"x", rsv=0x40), 1002),  # no extension was negotiated
    (client(0x3, b"x"), 1002),  # reserved opcode
    (client(0x9, b"x" * 126), 1002),  # control payloads are at most 125 bytes
    (client(0x9, b"x", fin=False), 1002),  # control frames are never fragmented
    (client(0x0, b"x"), 1002),  # a continuation of nothing
    (client(0x1, b"a", fin=False) + client(0x1, b"b"), 1002),  # a new message mid-message
    (client(0x1, b"\xff\xfe"), 1007),  # text must be UTF-8
])
async def test_protocol_violations_close_with_their_code(data: bytes, code: int) -> None:
    ws, transport, peer = await connection()
    ws.data_received(data)
    assert closed_with(transport, code)
    assert peer.texts == []


async def test_a_client_close_is_answered_with_its_code_and_ends_the_session() -> None:
    ws, transport, peer = await connection()
    ws.data_received(client(0x8, struct.pack("!H", 4000) + b"bye"))
    assert transport.written == close_frame(4000) and transport.closed
    ws.connection_lost(None)
    assert peer.ended == 1 and ws.close_code == 4000


async def test_a_server_close_ends_the_session_at_once_and_waits_for_the_peer() -> None:
    ws, transport, peer = await connection()
    ws.close(1001, b"Server shutting down")
    assert transport.written == close_frame(1001, b"Server shutting down")
    assert peer.ended == 1 and not transport.closed
    ws.data_received(client(0x1, b"late") + client(0x8, struct.pack("!H", 1001)))
    assert peer.texts == [] and transport.closed  # nothing after our close is handled
    ws.connection_lost(None)
    assert peer.ended == 1


@pytest.mark.parametrize(("unsent", "aborted"), [(0, False), (1, True)])
async def test_a_peer_silent_after_a_close_is_hung_up_on(unsent: int, aborted: bool) -> None:
    ws, transport, _ = await connection(close_timeout=0.05)
    transport.unsent = unsent  # 1: it has not even read what was queued before the close
    ws.close(1013, b"Slow consumer")
    await asyncio.sleep(0.02)
    assert not transport.closed  # still waiting for the peer's close frame
    await asyncio.wait_for(ws.gone(), 1)  # the socket is really gone
    assert transport.closed and transport.aborted is aborted


async def test_waiting_for_a_socket_that_will_not_close_ends_by_aborting_it() -> None:
    ws, transport, _ = await connection(close_timeout=0.05)
    transport.closed = True  # closing, but a peer that never reads keeps it from finishing

    await asyncio.wait_for(ws.gone(), 1)
    assert transport.aborted


async def test_a_lost_connection_ends_the_session_once_as_1006() -> None:
    ws, _, peer = await connection()
    ws.connection_lost(ConnectionResetError())
    ws.connection_lost(None)
    assert peer.ended == 1 and ws.close_code == 1006


def test_the_accept_key_is_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_only_a_get_of_the_chat_path_asking_for_websocket_is_an_upgrade() -> None:
    head = (b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n"
            b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
    headers = parse_upgrade(head)
    assert headers is not None and bad_request(headers) is None
    assert parse_upgrade(head.replace(b"GET /ws?", b"GET /ws/echo?")) is None
    assert parse_upgrade(head.replace(b"GET", b"POST")) is None
    assert parse_upgrade(head.replace(b"Upgrade: WebSocket", b"Upgrade: h2c")) is None
    assert parse_upgrade(b"garbage") is None
    old = parse_upgrade(head.replace(b"Version: 13", b"Version: 8"))
    assert old is not None and bad_request(old) == "Sec-WebSocket-Version must be 13"
