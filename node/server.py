"""The node's listening side: a chat WebSocket upgrade (GET /ws) is answered here and the
connection handed to `node.websocket`; every other request goes to aiohttp, unchanged.

Every accepted connection starts with `FirstRequest`, which reads only the request head.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

CHAT_PATH = "/ws"
HEAD_END = b"\r\n\r\n"
MAX_HEAD = 16384  # a longer head is aiohttp's to refuse


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A chat WebSocket upgrade request, as far as the node needs it."""

    key: str
    peer: str
    rest: bytes  # bytes that came after the head: the client's first frames


Accept = Callable[[asyncio.Transport, Upgrade], None]


def parse_upgrade(head: bytes) -> dict[str, str] | None:
    """The lower-cased headers of a `GET /ws` head asking for a WebSocket, else None."""
    try:
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        return None
    path = target.split("?", 1)[0]
    if method != "GET" or path != CHAT_PATH or not version.startswith("HTTP/1.1"):
        return None
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        return None
    return headers


def bad_request(headers: dict[str, str]) -> str | None:
    """Why a WebSocket upgrade cannot be accepted, or None."""
    if "upgrade" not in {t.strip().lower() for t in headers.get("connection", "").split(",")}:
        return "Connection header must include Upgrade"
    if headers.get("sec-websocket-version") != "13":
        return "Sec-WebSocket-Version must be 13"
    if len(headers.get("sec-websocket-key", "")) != 24:
        return "Sec-WebSocket-Key is missing or malformed"
    return None


def respond(transport: asyncio.Transport, status: int, reason: str, body: dict[str, Any]
            ) -> None:
    """A JSON HTTP response, then close: the client opens a new connection to retry."""
    data = json.dumps(body).encode()
    transport.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    transport.close()


class FirstRequest(asyncio.Protocol):
    """Reads a new connection's request head and decides who serves it."""

    __slots__ = ("_server", "_transport", "_buffer", "_deadline")

    def __init__(self, server: ChatServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._deadline = asyncio.get_running_loop().call_later(
            self._server.head_timeout, self._transport.close)  # a silent client leaves

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(HEAD_END)
        if end < 0 and len(self._buffer) <= MAX_HEAD:
            return
        assert self._deadline is not None
        self._deadline.cancel()
        headers = parse_upgrade(self._buffer[:end]) if end >= 0 else None
        if headers is None:
            self._hand_to_aiohttp()
            return
        assert self._transport is not None
        problem = bad_request(headers)
        if problem is not None:
            respond(self._transport, 400, "Bad Request", {"error": problem})
            return
        peer = self._transport.get_extra_info("peername")
        self._server.accept(self._transport, Upgrade(
            headers["sec-websocket-key"], f"{peer[0]}:{peer[1]}" if peer else "?",
            self._buffer[end + len(HEAD_END):]))

    def _hand_to_aiohttp(self) -> None:
        assert self._transport is not None
        handler = self._server.http()
        self._transport.set_protocol(handler)
        handler.connection_made(self._transport)
        handler.data_received(self._buffer)

    def eof_received(self) -> bool | None:
        return None  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()


class ChatServer:
    """The protocol factory the node's sites listen with."""

    def __init__(self, http: web.Server, accept: Accept, head_timeout: float) -> None:
        self.http = http
        self.accept = accept
        self.head_timeout = head_timeout

    def __call__(self) -> FirstRequest:
        return FirstRequest(self)


class NodeRunner(web.AppRunner):
    """An AppRunner whose sites accept connections through `ChatServer`."""

    def __init__(self, app: web.Application, accept: Accept, head_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._accept = accept
        self._head_timeout = head_timeout

    @property
    def server(self) -> web.Server | None:
        http = super().server
        if http is None:
            return None
        return cast(web.Server, ChatServer(http, self._accept, self._head_timeout))
