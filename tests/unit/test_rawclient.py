"""The benchmark client finds stamps in the raw byte stream, however the reads split it."""

from __future__ import annotations

import asyncio
import struct

from loadtest.rawclient import RawMember, client_frame, stamp_text


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def server_frame(text: str) -> bytes:
    payload = text.encode()
    return struct.pack("!BB", 0x81, len(payload)) + payload  # unmasked, < 126 bytes


def member() -> tuple[RawMember, list[tuple[int, int]], FakeTransport]:
    stamps: list[tuple[int, int]] = []
    raw = RawMember("ws://127.0.0.1:1/ws", "m", "r", lambda step, ns: stamps.append((step, ns)))
    transport = FakeTransport()
    raw.connection_made(transport)  # type: ignore[arg-type]
    return raw, stamps, transport


STREAM = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
          + server_frame('{"type":"room_joined","room":"r","history":[],"seq":0}')
          + b"".join(server_frame(f'{{"type":"message","text":"{stamp_text(s, 10**18 + s, s)}"'
                                  f',"seq":{s}}}') for s in range(1, 6))
          + server_frame('{"type":"ping","timestamp":1764103884123}')
          + server_frame(f'{{"type":"message","text":"{stamp_text(7, 42, 0)}","seq":6}}'))


async def test_every_split_of_the_stream_finds_each_stamp_once() -> None:
    for cut in range(1, len(STREAM)):
        raw, stamps, transport = member()
        raw.data_received(STREAM[:cut])
        raw.data_received(STREAM[cut:])
        assert stamps == [(s, 10**18 + s) for s in range(1, 6)] + [(7, 42)], cut
        assert raw.joined.done()
        pongs = [w for w in transport.written if b"pong" in w]
        assert pongs == [client_frame(b'{"type":"pong","timestamp":1764103884123}')], cut


async def test_a_refused_upgrade_fails_the_member() -> None:
    raw, _, _ = member()
    raw.data_received(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(raw.upgraded.exception(), ConnectionError)
    await asyncio.gather(raw.joined, return_exceptions=True)


def test_client_frames_are_masked_with_the_zero_key() -> None:
    assert client_frame(b"hi") == b"\x81\x82\0\0\0\0hi"
    assert client_frame(b"x" * 200)[:4] == b"\x81\xfe\x00\xc8"
