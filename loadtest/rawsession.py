"""A chat member on a raw socket that reconnects and resumes as the client library does.

The storm's generator: a member is one asyncio protocol, reused by every connection it makes,
with no aiohttp session, task or queue of its own, so that tens of thousands of clients
coming back at once cost the generator a small share of a core and the nodes are what the
storm measures. It follows the library's resume rules (node/client/): capped exponential
backoff with full jitter, at least `Retry-After` after a refused upgrade and `retryAfterMs`
after a `server_shutdown`, the same identity again (`userId` and `token`), and `join` with
`since`/`epoch`; a message sent and not seen stored is sent again with the same `clientId`
after the resume. It parses frames (the server never fragments nor masks) and JSON, and
checks what it receives: a room's seqs are consecutive within an epoch, so every seq after
the first `room_joined` must come exactly once and in order, live or in a resume's history.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from loadtest.rawclient import HEAD_END, client_frame, upgrade_request
from node.backoff import Backoff
from node.transport.frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT

FINAL_CLOSES = range(4000, 5000)  # the server says: do not come back


@dataclass(slots=True)
class Seen:
    """What a member received, for the run's checks."""

    first_seq: int | None = None  # the room's seq in the first room_joined
    last_seq: int = 0
    duplicates: int = 0
    gaps: int = 0  # seqs skipped, or a messages_lost
    resumed_at: float | None = None  # its first room_joined after `resume_after`
    recovered: bool | None = None
    node: str | None = None  # the node of its current connection
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (at, ms)


class RawSession(asyncio.Protocol):
    """One member of `room`, connecting from `source` (an address of this host) if given;
    `say` makes it its room's sender."""

    def __init__(self, url: str, name: str, room: str, source: str | None = None) -> None:
        self._url = urlsplit(url)
        self._source = source
        self.name = name
        self.room = room
        self.seen = Seen()
        self.accepted: list[int] = []  # seqs of its own messages the room stored
        self.resume_after = float("inf")  # a room_joined after this (time.time()) is a resume
        self.joined = asyncio.Event()
        self._user: tuple[str, str] | None = None  # (userId, token) to come back as
        self._epoch: str | None = None
        self._pending: tuple[str, bytes] | None = None  # (clientId, its frame) until stored
        self._sent = 0
        self._backoff = Backoff()
        self.retry_after = 0.0  # seconds the server asked to wait before coming back
        self._stopped = False
        self._transport: asyncio.Transport | None = None
        self._upgraded = False
        self._buffer = b""
        self._connected: asyncio.Future[None] | None = None

    # --- the connection loop -----------------------------------------------------------

    async def run(self) -> None:
        """Connect, and connect again after every loss, until `stop` or a final close."""
        loop = asyncio.get_running_loop()
        while not self._stopped:
            self._connected = loop.create_future()
            try:
                await loop.create_connection(
                    lambda: self, self._url.hostname, self._url.port,
                    local_addr=(self._source, 0) if self._source else None)
                await self._connected
            except OSError:
                pass
            if not self._stopped:
                await asyncio.sleep(max(self.retry_after, self._backoff.next_delay()))
                self.retry_after = 0.0

    def stop(self) -> None:
        self._stopped = True
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._upgraded, self._buffer = False, b""
        self._transport.write(upgrade_request(self._url, self._url.path or "/"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.joined.clear()
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(None)

    # --- reading ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        data = self._buffer + data if self._buffer else data
        if not self._upgraded:
            end = data.find(HEAD_END)
            if end < 0:
                self._buffer = data
                return
            if not self._on_head(data[:end]):
                return
            data = data[end + len(HEAD_END):]
        self._buffer = data[self._frames(data):]

    def _on_head(self, head: bytes) -> bool:
        """The upgrade's answer: on 101 authenticate and join; else note its Retry-After
        and close (the loop connects again)."""
        if head.startswith(b"HTTP/1.1 101"):
            self._upgraded = True
            self._authenticate()
            return True
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"retry-after:"):
                self.retry_after = float(line.split(b":", 1)[1])
        self._close()
        return False

    def _frames(self, data: bytes) -> int:
        """Handle every complete frame in `data`; returns where the incomplete rest starts."""
        at, end = 0, len(data)
        while end - at >= 2:
            size, head = data[at + 1] & 0x7F, 2
            if size == 126:
                size, head = int.from_bytes(data[at + 2:at + 4]), 4
            elif size == 127:
                size, head = int.from_bytes(data[at + 2:at + 10]), 10
            if end - at < head + size:
                break
            opcode, payload = data[at] & 0x0F, data[at + head:at + head + size]
            at += head + size
            if opcode == OP_TEXT:
                self._on_event(json.loads(payload))
            elif opcode == OP_PING:
                self._write(client_frame(payload, OP_PONG))
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 0
                self._stopped = self._stopped or code in FINAL_CLOSES
                self._close()
                break
        return at

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "message":
            self._on_message(event)
        elif kind == "ping":
            self._send({"type": "pong", "timestamp": event.get("timestamp")})
        elif kind == "auth_success":
            self._user = (event["userId"], event["token"])
            self.seen.node = event["node"]
        elif kind == "room_joined":
            self._on_joined(event)
        elif kind == "message_sent" and event.get("duplicate"):
            self._stored(event.get("clientId"), event["seq"])
        elif kind == "messages_lost":
            self.seen.gaps += 1
        elif kind == "server_shutdown":
            self.retry_after = event.get("retryAfterMs", 0) / 1000
        elif kind == "error" and not self.joined.is_set():
            self._close()  # auth or join refused for now (`unavailable`): come back later

    def _on_joined(self, event: dict[str, Any]) -> None:
        seen = self.seen
        if seen.first_seq is None:
            seen.first_seq = seen.last_seq = event["seq"]
        else:
            if event["epoch"] != self._epoch:
                seen.gaps += 1  # another incarnation of the room: its seqs start over
                seen.last_seq = 0
            for message in event["history"]:
                self._on_message(message)
            if seen.last_seq < event["seq"]:
                seen.gaps += 1  # a gap the reply did not carry (`more`): not paged here
                seen.last_seq = event["seq"]
            if seen.resumed_at is None and time.time() > self.resume_after:
                seen.resumed_at, seen.recovered = time.time(), event.get("recovered")
        self._epoch = event["epoch"]
        self._backoff.reset()
        self.joined.set()
        if self._pending is not None:
            self._write(self._pending[1])  # stored once however often it is sent

    def _on_message(self, message: dict[str, Any]) -> None:
        seen, seq = self.seen, message["seq"]
        if seq <= seen.last_seq:
            seen.duplicates += 1
            return
        if seq != seen.last_seq + 1:
            seen.gaps += 1
        seen.last_seq = seq
        now = time.time()
        seen.latencies.append((now, 1000 * (now - int(message["text"]) / 1e9)))
        self._stored(message.get("clientId"), seq)

    def _stored(self, client_id: str | None, seq: int) -> None:
        if self._pending is not None and client_id == self._pending[0]:
            self.accepted.append(seq)
            self._pending = None

    # --- writing ---------------------------------------------------------------------

    def say(self) -> bool:
        """Send the room a message stamped with the time, unless not joined or the last one
        is not stored yet (it is sent again after a resume). Returns whether it sent."""
        if self._pending is not None or not self.joined.is_set():
            return False
        self._sent += 1
        client_id = f"{self.name}-{self._sent}"
        frame = client_frame(json.dumps({"type": "message", "text": str(time.time_ns()),
                                         "clientId": client_id}).encode())
        self._pending = (client_id, frame)
        self._write(frame)
        return True

    def _authenticate(self) -> None:
        auth: dict[str, Any] = {"type": "auth", "name": self.name}
        if self._user is not None:
            auth |= {"userId": self._user[0], "token": self._user[1]}
        join: dict[str, Any] = {"type": "join", "room": self.room}
        if self._epoch is not None:
            join |= {"since": self.seen.last_seq, "epoch": self._epoch}
        self._send(auth)
        self._send(join)

    def _send(self, event: dict[str, Any]) -> None:
        self._write(client_frame(json.dumps(event).encode()))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
