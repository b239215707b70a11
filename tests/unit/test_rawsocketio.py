"""The Socket.IO benchmark client walks the Engine.IO/Socket.IO handshake and finds stamps
and pings in the raw byte stream, however the reads split it."""

from __future__ import annotations

from loadtest.rawclient import client_frame, stamp_text
from loadtest.rawsocketio import SocketIOMember
from tests.unit.test_rawclient import FakeTransport, server_frame

UPGRADE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
OPEN = server_frame('0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000}')
CONNECTED = server_frame('40{"sid":"def"}')
JOINED = server_frame('42["joined","r"]')
TRAFFIC = (b"".join(server_frame(f'42["message",{{"room":"r","text":"{stamp_text(1, s, s)}"}}]')
                    for s in range(1, 4))
           + server_frame("2")
           + server_frame(f'42["message",{{"room":"r","text":"{stamp_text(2, 9, 0)}"}}]'))


def member() -> tuple[SocketIOMember, list[tuple[int, int]], FakeTransport]:
    stamps: list[tuple[int, int]] = []
    raw = SocketIOMember("ws://127.0.0.1:1/socket.io/", "m", "r",
                         lambda step, ns: stamps.append((step, ns)))
    transport = FakeTransport()
    raw.connection_made(transport)  # type: ignore[arg-type]
    return raw, stamps, transport


async def test_the_handshake_connects_the_namespace_then_joins_the_room() -> None:
    raw, _, transport = member()
    assert transport.written[0].startswith(b"GET /socket.io/?EIO=4&transport=websocket ")
    for packet, answer in ((UPGRADE + OPEN, b"40"), (CONNECTED, b'42["join","r"]')):
        raw.data_received(packet)
        assert transport.written[-1] == client_frame(answer)
    assert not raw.joined.done()
    raw.data_received(JOINED)
    assert raw.joined.done()
    raw.say("hi")
    assert transport.written[-1] == client_frame(b'42["message",{"room":"r","text":"hi"}]')


async def test_every_split_of_the_traffic_finds_each_stamp_and_ping_once() -> None:
    for cut in range(1, len(TRAFFIC)):
        raw, stamps, transport = member()
        raw.data_received(UPGRADE + OPEN)
        raw.data_received(CONNECTED)
        raw.data_received(JOINED)
        raw.data_received(TRAFFIC[:cut])
        raw.data_received(TRAFFIC[cut:])
        assert stamps == [(1, 1), (1, 2), (1, 3), (2, 9)], cut
        assert transport.written.count(client_frame(b"3")) == 1, cut
