"""The node's listening side: every accepted socket is a `Connection`, counted by kind and
client address, with every request head read here under a deadline and a size limit. A
WebSocket upgrade as a connection's first request (GET /ws, and /ws/echo when enabled) is
answered here and the connection handed to `node.transport.websocket`; every other request goes to
aiohttp, one at a time.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from node.transport.addresses import TrustedProxies, peer_host
from node.transport.connections import Connections, Kind, Refusal
from node.transport.origins import OriginPolicy

CHAT_PATH = "/ws"
ECHO_PATH = "/ws/echo"
HEAD_END = b"\r\n\r\n"
MAX_BODY = 65536  # no route takes a body; a small one (a form, a JSON object) is tolerated


@dataclass(frozen=True, slots=True)
class Head:
    """One parsed HTTP request head: its method, path and lower-cased headers."""

    method: str
    path: str
    version: str
    headers: dict[str, str]

    @property
    def is_websocket(self) -> bool:
        return (self.method == "GET" and self.version == "HTTP/1.1"
                and self.headers.get("upgrade", "").lower() == "websocket")


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A WebSocket upgrade request, as far as the node needs it."""

    path: str
    key: str
    address: str  # the client's address (through a trusted gateway, the one it names)
    rest: bytes  # bytes that came after the head: the client's first frames


class Inner(Protocol):
    """What serves a connection after its head: a WebSocket or aiohttp's request handler."""

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


Accept = Callable[[asyncio.Transport, Upgrade], Inner | None]


def parse_head(head: bytes) -> Head | None:
    """The request line and headers of a head, or None when it is not HTTP/1.x."""
    request_line, *lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            return None
        headers[name.strip().lower()] = value.strip()
    return Head(parts[0], parts[1].split("?", 1)[0], parts[2], headers)


def bad_request(headers: dict[str, str]) -> str | None:
    """Why a WebSocket upgrade cannot be accepted, or None."""
    if "upgrade" not in {t.strip().lower() for t in headers.get("connection", "").split(",")}:
        return "Connection header must include Upgrade"
    if headers.get("sec-websocket-version") != "13":
        return "Sec-WebSocket-Version must be 13"
    if len(headers.get("sec-websocket-key", "")) != 24:
        return "Sec-WebSocket-Key is missing or malformed"
    return None


def body_length(headers: dict[str, str]) -> int | Refusal:
    """The body's size, or the answer to a body the node does not take."""
    if "transfer-encoding" in headers:
        return 411, "Length Required", "chunked request bodies are not accepted"
    length = headers.get("content-length", "0")
    if not length.isdigit():
        return 411, "Length Required", "Content-Length is malformed"
    if int(length) > MAX_BODY:
        return 413, "Content Too Large", f"request bodies are limited to {MAX_BODY} bytes"
    return int(length)


def respond(transport: asyncio.Transport, status: int, reason: str, body: dict[str, Any],
            headers: str = "") -> None:
    """A JSON HTTP response, then close: the client opens a new connection to retry."""
    data = json.dumps(body).encode()
    transport.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{headers}"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    transport.close()


class State(enum.Enum):
    HEAD = "reading a request head"
    BODY = "passing a request body to aiohttp"
    ANSWERING = "waiting for aiohttp's response"
    UPGRADED = "a WebSocket"
    REFUSED = "answered with an error and closing"


class Connection(asyncio.Protocol):
    """One accepted socket, from its first byte to its last.

    A request must be complete (head and body) within the handshake timeout of its first
    byte, and its head within --max-head bytes, on the first request and every later one.
    aiohttp gets one request at a time: bytes that arrive while it answers wait here, and
    the socket is not read meanwhile, so a pipelining client cannot queue requests.
    """

    __slots__ = ("_server", "_transport", "_inner", "_pending", "_timer", "_state", "_body",
                 "_requests", "_refusal", "kind", "address")

    def __init__(self, server: ChatServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._inner: Inner | None = None
        self._pending: bytes | bytearray = b""  # a bytearray once bytes wait here
        self._timer: asyncio.TimerHandle | None = None
        self._state = State.HEAD
        self._body = 0
        self._requests = 0
        self._refusal: Refusal | None = None
        self.kind = Kind.PENDING
        self.address: str | None = None  # known once the client's address is known

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = peer_host(transport.get_extra_info("peername"))
        self._refusal = self._server.connections.add(self)
        if self._server.connections.overrun:
            self._transport.abort()
            return
        if not self._server.trusted.trusts(peer):
            self._identify(peer)
        self._start_timer()

    def _identify(self, address: str) -> None:
        refusal = self._server.connections.place(self, address)
        self._refusal = self._refusal or refusal

    # --- reading heads ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._state is State.UPGRADED:
            assert self._inner is not None
            self._inner.data_received(data)
            return
        if self._state is State.REFUSED:
            return
        if self._state is State.BODY:
            data = self._pass_body(data)
        if data:
            self._keep(data)
        if self._state is State.HEAD:
            self._next_request()
        elif self._state is State.ANSWERING:
            self._pause()  # one request at a time

    def _keep(self, data: bytes) -> None:
        """Bytes of a request not served yet."""
        if self._pending:
            self._pending += data  # a bytearray: grows in place
        else:
            self._pending = bytearray(data)

    def _pass_body(self, data: bytes) -> bytes:
        """Give aiohttp what belongs to the current body; returns what comes after it."""
        assert self._inner is not None
        part, rest = data[:self._body], data[self._body:]
        self._body -= len(part)
        self._inner.data_received(part)
        if not self._body:
            self._request_complete()
        return rest

    def _next_request(self) -> None:
        """Serve the head waiting in `_pending`, if it is complete and fits."""
        assert self._transport is not None
        if not self._pending:
            return
        self._start_timer()
        limit = self._server.max_head
        end = self._pending.find(HEAD_END, 0, limit + len(HEAD_END))
        if end < 0:
            if len(self._pending) > limit:
                self._refuse(431, "Request Header Fields Too Large",
                             f"request heads are limited to {limit} bytes")
            return
        head_bytes = bytes(self._pending[:end])
        rest = bytes(self._pending[end + len(HEAD_END):])
        self._pending = b""
        head = parse_head(head_bytes)
        if head is None:
            self._refuse(400, "Bad Request", "malformed request head")
            return
        self._requests += 1
        if self._requests == 1:
            self._first_request(head, head_bytes, rest)
        else:
            self._to_aiohttp(head, head_bytes, rest)

    def _first_request(self, head: Head, head_bytes: bytes, rest: bytes) -> None:
        if self.address is None:
            peer = peer_host(self._transport_peer())
            self._identify(self._server.trusted.client(peer, head.headers))
        if self._refusal is not None:
            self._refuse(*self._refusal)
            return
        if head.is_websocket and head.path in self._server.websocket_paths:
            self._upgrade(head, rest)
        else:
            self._to_aiohttp(head, head_bytes, rest)

    def _transport_peer(self) -> object:
        assert self._transport is not None
        return self._transport.get_extra_info("peername")

    def _upgrade(self, head: Head, rest: bytes) -> None:
        assert self._transport is not None and self.address is not None
        self._stop_timer()
        problem = bad_request(head.headers)
        if problem is not None:
            self._refuse(400, "Bad Request", problem)
            return
        refusal = head.path == CHAT_PATH and self._server.origins.refusal(head.headers)
        if refusal:
            self._refuse(*refusal)
            return
        inner = self._server.accept(self._transport, Upgrade(
            head.path, head.headers["sec-websocket-key"], self.address, rest))
        if inner is not None:
            self._inner, self._state = inner, State.UPGRADED
            self._server.connections.retype(self, Kind.CHAT if head.path == CHAT_PATH
                                            else Kind.ECHO)

    def _to_aiohttp(self, head: Head, head_bytes: bytes, rest: bytes) -> None:
        """Hand one request to aiohttp: its head now, its body as it arrives."""
        assert self._transport is not None
        length = body_length(head.headers)
        if isinstance(length, tuple):
            self._refuse(*length)
            return
        if self._inner is None:
            self._inner = cast(Inner, self._server.http())
            cast(asyncio.Protocol, self._inner).connection_made(self._transport)
            self._server.connections.retype(self, Kind.HTTP)
        self._state, self._body = State.BODY, length
        self._inner.data_received(head_bytes + HEAD_END)
        rest = self._pass_body(rest) if length else rest
        if not length:
            self._request_complete()
        if rest:
            self._keep(rest)

    def _request_complete(self) -> None:
        self._stop_timer()
        self._state = State.ANSWERING

    def answered(self) -> None:
        """aiohttp has the response to the current request: read the next one."""
        if self._state is not State.ANSWERING or self._transport is None:
            return
        self._state = State.HEAD
        if not self._transport.is_closing():
            self._transport.resume_reading()
        self._next_request()

    def _pause(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _refuse(self, status: int, reason: str, message: str) -> None:
        assert self._transport is not None
        self._stop_timer()
        retry = "Retry-After: 1\r\n" if status in (429, 503) else ""
        code = reason.lower().replace(" ", "_")  # "Forbidden" -> forbidden
        respond(self._transport, status, reason, {"error": code, "message": message}, retry)
        self._state, self._pending = State.REFUSED, b""

    # --- deadline ----------------------------------------------------------------------------

    def _start_timer(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self._server.head_timeout, self._expired)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        """A request not complete in time: the client is too slow or not trying."""
        self._timer = None
        if self._transport is not None:
            self._transport.abort()

    # --- the rest of the protocol, passed on -----------------------------------------------

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._server.connections.remove(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)


class ClientErrorsWithoutTraceback(logging.Filter):
    """aiohttp logs a request its parser refuses (answered 400) with a traceback at ERROR:
    that is the client's fault, and a client must not be able to fill the log with
    tracebacks. Such records become one line at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            message = record.getMessage()
            record.msg, record.args = "%s: %s", (message, record.exc_info[1])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def answered(request: web.BaseRequest) -> None:
    """Tell the request's connection that its response is ready (see `Connection`)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    if isinstance(protocol, Connection):
        protocol.answered()


class ChatServer:
    """The protocol factory the node's sites listen with."""

    def __init__(self, http: web.Server, accept: Accept, connections: Connections,
                 trusted: TrustedProxies, origins: OriginPolicy, websocket_paths: frozenset[str],
                 head_timeout: float, max_head: int) -> None:
        self.http = http
        self.origins = origins
        self.accept = accept
        self.connections = connections
        self.trusted = trusted
        self.websocket_paths = websocket_paths
        self.head_timeout = head_timeout
        self.max_head = max_head

    def __call__(self) -> Connection:
        return Connection(self)


class NodeRunner(web.AppRunner):
    """An AppRunner whose sites accept connections through `ChatServer`."""

    def __init__(self, app: web.Application, server: Callable[[web.Server], ChatServer],
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._chat_server = server

    @property
    def server(self) -> web.Server | None:
        http = super().server
        if http is None:
            return None
        return cast(web.Server, self._chat_server(http))
