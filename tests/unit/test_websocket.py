"""The server side of RFC 6455 as the node speaks it: frames in, frames out, closes."""

from __future__ import annotations

import asyncio
import dataclasses
import struct

import pytest

from node.transport.server import bad_request, parse_head
from tests.frames import client
from node.ratelimit import Rate
from node.transport.output_budget import OutputBudget
from node.transport.frames import accept_key, close_frame, frame
from node.transport.websocket import Limits, WebSocket

MAX = 100
LIMITS = Limits(max_message=MAX, max_fragments=8, frames=Rate(1000.0, 1000),
                max_buffer=1000, close_timeout=1.0, output=OutputBudget(10_000, 100_000))


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.aborted = False
        self.lost = False
        self.unsent = 0  # bytes the peer has not read yet
        self.reading = True
        self.protocol: WebSocket | None = None
        self.eof_after: bytes | None = None  # what was written before our FIN

    def write(self, data: bytes) -> None:
        assert self.eof_after is None, "written after the FIN"
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_after = self.written

    def set_write_buffer_limits(self, high: int) -> None:
        self.high_water = high

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

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

    def on_binary(self, data: bytes) -> None:
        self.binaries += 1

    def on_closed(self) -> None:
        self.ended += 1


async def connection(**limits: object) -> tuple[WebSocket, FakeTransport, Recorder]:
    transport, peer = FakeTransport(), Recorder()
    ws = WebSocket(transport, dataclasses.replace(LIMITS, **limits), 0.0,  # type: ignore[arg-type]
                   "203.0.113.9")
    transport.protocol = ws
    ws.start(peer, b"")
    return ws, transport, peer


def close_sent(transport: FakeTransport) -> tuple[int, bytes] | None:
    """The code and reason of the close frame the server wrote, if it wrote one."""
    at = transport.written.find(b"\x88")
    if at < 0:
        return None
    size = transport.written[at + 1]
    payload = transport.written[at + 2:at + 2 + size]
    return struct.unpack_from("!H", payload)[0], payload[2:]


def closed_with(transport: FakeTransport, code: int) -> bool:
    """The server sent a close frame with `code` (and waits for the peer's answer)."""
    sent = close_sent(transport)
    return sent is not None and sent[0] == code


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


async def test_fragments_count_up_to_the_limit_empty_ones_included() -> None:
    ws, transport, peer = await connection(max_fragments=8)
    ws.data_received(client(0x1, b"", fin=False) + client(0x0, b"", fin=False) * 6
                     + client(0x0, b"ok"))
    assert peer.texts == ["ok"]  # eight fragments
    ws.data_received(client(0x1, b"", fin=False) + client(0x0, b"", fin=False) * 8)
    assert closed_with(transport, 1009) and peer.texts == ["ok"]


async def test_every_frame_takes_from_the_frame_budget_pings_included() -> None:
    ws, transport, peer = await connection(frames=Rate(0.001, 3))
    ws.data_received(client(0x9, b"") + client(0x1, b"", fin=False) + client(0x0, b"a"))
    assert peer.texts == ["a"]
    ws.data_received(client(0x9, b""))
    assert closed_with(transport, 1008)
    assert transport.written.count(b"\x8a") == 1  # the last ping got no pong


async def test_a_fragment_flood_costs_linear_time() -> None:
    """Thousands of tiny fragments: each is counted once, never re-summed."""
    ws, transport, peer = await connection(max_message=1 << 20, max_fragments=100_000,
                                           frames=Rate(1000.0, 1_000_000))
    flood = client(0x1, b"x", fin=False) + client(0x0, b"x", fin=False) * 50_000
    loop = asyncio.get_running_loop()
    started = loop.time()
    for at in range(0, len(flood), 4096):
        ws.data_received(flood[at:at + 4096])
    ws.data_received(client(0x0, b"!"))
    assert peer.texts == ["x" * 50_001 + "!"]
    assert loop.time() - started < 5  # quadratic re-summing took minutes for this much


async def test_a_frame_arriving_byte_by_byte_is_parsed_once_it_is_complete() -> None:
    ws, _, peer = await connection()
    data = client(0x1, b"y" * 90)
    for byte in range(len(data)):
        ws.data_received(data[byte:byte + 1])
    assert peer.texts == ["y" * 90]


async def test_an_oversized_frame_is_passed_over_unbuffered_until_the_close_answer() -> None:
    ws, transport, peer = await connection()
    big = client(0x1, b"z" * 5000)
    ws.data_received(big[:50])
    assert closed_with(transport, 1009) and not transport.closed
    for at in range(50, len(big), 1000):  # the rest of the frame arrives and is dropped
        ws.data_received(big[at:at + 1000])
    assert len(ws._buffer) == 0 and not transport.closed
    ws.data_received(client(0x8, struct.pack("!H", 1009)))
    assert transport.closed and peer.texts == []


async def test_the_binary_payload_goes_to_the_peer() -> None:
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
    (struct.pack("!BBQ", 0x81, 0xFF, 1 << 63) + b"mask", 1002),  # 64-bit length, top bit set
])
async def test_protocol_violations_close_with_their_code(data: bytes, code: int) -> None:
    ws, transport, peer = await connection()
    ws.data_received(data)
    assert closed_with(transport, code)
    assert peer.texts == [] and peer.ended == 1


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
                                  65535])
async def test_an_invalid_close_code_is_answered_with_1002(code: int) -> None:
    ws, transport, _ = await connection()
    ws.data_received(client(0x8, struct.pack("!H", code)))
    assert closed_with(transport, 1002) and transport.closed


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 4999])
async def test_a_valid_close_code_is_echoed(code: int) -> None:
    ws, transport, _ = await connection()
    ws.data_received(client(0x8, struct.pack("!H", code) + "fin ✓".encode()))
    assert close_sent(transport) == (code, b"") and transport.closed


async def test_a_close_reason_that_is_not_utf8_is_answered_with_1007() -> None:
    ws, transport, _ = await connection()
    ws.data_received(client(0x8, struct.pack("!H", 1000) + b"\xc3\x28"))
    assert closed_with(transport, 1007) and transport.closed


async def test_a_close_without_a_code_is_answered_with_1000_never_1005() -> None:
    ws, transport, _ = await connection()
    ws.data_received(client(0x8, b""))
    assert close_sent(transport) == (1000, b"") and transport.closed


def test_a_close_reason_is_cut_on_a_character_boundary() -> None:
    payload = close_frame(1000, "é" * 100)[2:]
    assert len(payload) <= 125
    assert payload[2:].decode() == "é" * 61


async def test_a_client_close_is_answered_with_its_code_and_ends_the_session() -> None:
    ws, transport, peer = await connection()
    ws.data_received(client(0x8, struct.pack("!H", 4000) + b"bye"))
    assert transport.written == close_frame(4000) and transport.closed
    ws.connection_lost(None)
    assert peer.ended == 1 and ws.close_code == 4000


async def test_a_server_close_ends_the_session_at_once_and_waits_for_the_peer() -> None:
    ws, transport, peer = await connection()
    ws.close(1001, "Server shutting down")
    assert transport.written == close_frame(1001, "Server shutting down")
    assert peer.ended == 1 and not transport.closed
    ws.data_received(client(0x1, b"late") + client(0x8, struct.pack("!H", 1001)))
    assert peer.texts == [] and transport.closed  # nothing after our close is handled
    ws.connection_lost(None)
    assert peer.ended == 1


async def test_a_peer_that_does_not_read_is_not_read_and_pongs_count_toward_the_buffer() -> None:
    ws, transport, _ = await connection(max_buffer=1000)
    ws.pause_writing()  # the transport's buffer passed its high-water mark
    assert not transport.reading
    ws.resume_writing()
    assert transport.reading
    transport.unsent = 1001  # what the peer left unread, pongs included
    ws.data_received(client(0x9, b"p"))
    assert closed_with(transport, 1013)


async def test_a_session_behind_and_a_peer_not_reading_hold_reading_until_both_are_done() -> None:
    ws, transport, _ = await connection()
    ws.hold_reading()
    ws.pause_writing()
    ws.release_reading()
    assert not transport.reading
    ws.resume_writing()
    assert transport.reading


@pytest.mark.parametrize(("unsent", "aborted"), [(0, False), (1, True)])
async def test_a_peer_silent_after_a_close_is_hung_up_on(unsent: int, aborted: bool) -> None:
    ws, transport, _ = await connection(close_timeout=0.05)
    transport.unsent = unsent  # 1: it has not even read what was queued before the close
    ws.close(1013, "Slow consumer")
    await asyncio.sleep(0.02)
    assert not transport.closed  # still waiting for the peer's close frame
    await asyncio.wait_for(ws.gone(), 1)  # the socket is really gone
    assert transport.closed and transport.aborted is aborted


async def test_after_a_framing_violation_bytes_are_dropped_until_the_close_timeout() -> None:
    ws, transport, _ = await connection(close_timeout=0.05)
    ws.data_received(client(0x1, b"x", masked=False))
    ws.data_received(b"\x00" * 10_000)  # unparseable: dropped, not buffered
    assert closed_with(transport, 1002) and not transport.closed
    await asyncio.wait_for(ws.gone(), 1)
    assert transport.closed and not transport.aborted


async def test_a_framing_violation_sends_the_close_frame_then_a_fin() -> None:
    """The peer's close answer would be lost among the dropped bytes: our FIN right after
    the close frame lets it hang up now rather than after the close timeout."""
    ws, transport, _ = await connection()
    ws.data_received(client(0x3, b"reserved opcode"))
    assert transport.eof_after is not None and closed_with(transport, 1002)
    assert transport.eof_after == transport.written and not transport.closed


async def test_a_violation_with_framing_intact_reads_on_for_the_close_answer() -> None:
    ws, transport, _ = await connection()
    ws.data_received(client(0x1, b"\xff"))  # not UTF-8: the next frame is still found
    assert closed_with(transport, 1007) and transport.eof_after is None


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


def test_a_get_asking_for_websocket_is_an_upgrade() -> None:
    head = (b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n"
            b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
    parsed = parse_head(head)
    assert parsed is not None and parsed.is_websocket and parsed.path == "/ws"
    assert bad_request(parsed.headers) is None
    post = parse_head(head.replace(b"GET", b"POST"))
    assert post is not None and not post.is_websocket
    h2c = parse_head(head.replace(b"Upgrade: WebSocket", b"Upgrade: h2c"))
    assert h2c is not None and not h2c.is_websocket
    assert parse_head(b"garbage") is None
    assert parse_head(b"GET / HTTP/1.1\r\nno colon here") is None
    old = parse_head(head.replace(b"Version: 13", b"Version: 8"))
    assert old is not None and bad_request(old.headers) == "Sec-WebSocket-Version must be 13"


async def test_invalid_utf8_in_a_fragment_fails_at_that_fragment() -> None:
    ws, transport, peer = await connection()
    ws.data_received(client(0x1, "é".encode()[:1] + b"\xff", fin=False))
    assert closed_with(transport, 1007) and peer.texts == []


async def test_a_character_split_across_fragments_is_whole() -> None:
    ws, _, peer = await connection()
    data = "héllo".encode()
    ws.data_received(client(0x1, data[:2], fin=False) + client(0x0, data[2:]))
    assert peer.texts == ["héllo"]


async def test_a_flood_past_the_frame_budget_stops_being_read() -> None:
    ws, transport, _ = await connection(frames=Rate(0.001, 3), close_timeout=0.05)
    ws.data_received(client(0x9, b"") * 10_000)  # one read of many pings
    assert closed_with(transport, 1008) and not transport.reading
    assert transport.written.count(b"\x8a") == 3  # only the budget's worth was answered
    await asyncio.wait_for(ws.gone(), 1)


async def test_frames_passed_over_after_a_close_take_from_the_budget_too() -> None:
    ws, transport, _ = await connection(frames=Rate(0.001, 20), max_fragments=4)
    ws.data_received(client(0x1, b"", fin=False) + client(0x0, b"", fin=False) * 10_000)
    assert closed_with(transport, 1009) and not transport.reading  # too many, then a flood
