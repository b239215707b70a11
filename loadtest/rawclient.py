"""The benchmark's WebSocket client: lean enough that the generator is not what saturates.

Server frames are unmasked, so a benchmark message's text appears verbatim in the byte
stream: the receiver scans each read for the stamp marker instead of parsing frames or JSON.
Client frames are masked with the all-zero key, which leaves the payload as it is: sending is
one header and the bytes.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from typing import cast
from urllib.parse import SplitResult, urlsplit

from node.transport.frames import MASKED, OP_TEXT, header

MARKER = b'"text":"t'  # the start of a text made by `stamp_text`
PING = b'{"type":"ping","timestamp":'
JOINED = b'"type":"room_joined"'
REFUSED = b'"type":"error"'
HEAD_END = b"\r\n\r\n"
KEEP = max(len(MARKER), len(PING), len(JOINED)) - 1  # a marker may straddle two reads
LOOPBACK_SOURCES = 64  # 127.0.0.2 on: each has its own ~28,000 ephemeral ports

OnStamp = Callable[[int, int], None]  # (step, the sender's clock in ns)


def stamp_text(step: int, sent_ns: int, n: int) -> str:
    return f"t{step}:{sent_ns}|{n}"


def client_frame(text: bytes, opcode: int = OP_TEXT) -> bytes:
    """A masked frame (text by default) with the all-zero mask key."""
    return header(opcode, len(text), MASKED) + b"\0\0\0\0" + text


def upgrade_request(url: SplitResult, target: str) -> bytes:
    """The HTTP request that asks `url`'s server to upgrade `target` to a WebSocket."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


class RawMember(asyncio.Protocol):
    """One chat member: handshake, auth, join, then count stamps and answer pings. A peer's
    protocol (loadtest.rawsocketio) overrides the handshake, the pings and `say`."""

    def __init__(self, url: str, name: str, room: str, on_stamp: OnStamp) -> None:
        self._url = urlsplit(url)
        self._name = name
        self.room = room
        self._on_stamp = on_stamp
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        loop = asyncio.get_running_loop()
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.joined: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(upgrade_request(self._url, self._target()))

    def _target(self) -> str:
        return self._url.path or "/"

    def _on_upgraded(self) -> None:
        self.send(f'{{"type":"auth","name":"{self._name}"}}')
        self.send(f'{{"type":"join","room":"{self.room}"}}')

    def say(self, text: str) -> None:
        """Send a chat message to the member's room."""
        self.send(f'{{"type":"message","text":"{text}"}}')

    def send(self, text: str) -> None:
        assert self._transport is not None
        self._transport.write(client_frame(text.encode()))

    def data_received(self, data: bytes) -> None:
        data = self._buffer + data
        if not self.upgraded.done():
            end = data.find(HEAD_END)
            if end < 0:
                self._buffer = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self._fail(ConnectionError(data[:end].decode(errors="replace")))
                return
            self.upgraded.set_result(None)
            self._on_upgraded()
            data = data[end + len(HEAD_END):]
        self._buffer = data[self._scan(data):]

    def _scan(self, data: bytes) -> int:
        """Handle every complete ping and stamp in `data`; returns where the unread rest
        starts: at an item cut off by the end of the read, else past everything handled
        (keeping a few bytes that may begin a marker)."""
        done, cut = self._answer_pings(data)
        at = data.find(MARKER)
        while at >= 0:
            bar = data.find(b"|", at)
            if bar < 0:
                cut = at if cut < 0 else min(cut, at)
                break
            step, _, sent_ns = data[at + len(MARKER):bar].partition(b":")
            self._on_stamp(int(step), int(sent_ns))
            done = max(done, bar)
            at = data.find(MARKER, bar)
        if not self.joined.done():
            self._join_progress(data)
        return cut if cut >= 0 else max(done, len(data) - KEEP)

    def _answer_pings(self, data: bytes) -> tuple[int, int]:
        """Pong every complete ping; returns (handled up to, where a cut-off ping starts or
        -1)."""
        done, cut = 0, -1
        ping = data.find(PING)
        while ping >= 0 and cut < 0:
            end = data.find(b"}", ping)
            if end < 0:
                cut = ping
            else:
                self.send(f'{{"type":"pong","timestamp":{data[ping + len(PING):end].decode()}}}')
                done = max(done, end)
                ping = data.find(PING, end)
        return done, cut

    def _join_progress(self, data: bytes) -> None:
        if data.find(JOINED) >= 0:
            self.joined.set_result(None)
        elif (at := data.find(REFUSED)) >= 0:  # auth or join refused: fail now, not later
            self._fail(ConnectionError(data[at:at + 200].decode(errors="replace")))

    def _fail(self, error: Exception) -> None:
        for waiter in (self.upgraded, self.joined):
            if not waiter.done():
                waiter.set_exception(error)
        self.upgraded.exception()  # callers wait for `joined`: the same error reaches them
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("closed before room_joined"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def loopback_source(index: int) -> str:
    """The source address of client `index`: a connection is four numbers, and from one
    address to one listener only the source port varies, so past ~28,000 clients a
    benchmark spreads its clients over several loopback addresses."""
    return f"127.0.0.{2 + index % LOOPBACK_SOURCES}"


async def connect_member(kind: type[RawMember], url: str, name: str, room: str,
                         on_stamp: OnStamp, timeout: float, source: str | None = None
                         ) -> RawMember:
    """A member of the `kind`'s protocol that has joined `room`, connected from `source`
    (an address of this host) if given."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, member = await loop.create_connection(
        lambda: kind(url, name, room, on_stamp), parts.hostname, parts.port,
        local_addr=(source, 0) if source else None)
    await asyncio.wait_for(member.joined, timeout)
    return member
