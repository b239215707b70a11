"""A lean HTTP/1.1 client for the node's POSTs to the application (hook calls and webhooks):
keep-alive connections per origin, one request at a time on each, the answer's head and
body bounded in bytes. aiohttp's client costs a node about 150 µs of CPU a POST, this one
a fraction of that (docs/performance.md, *Our own code where a library exists*).

What it needs of a server is plain HTTP/1.1 (or 1.0): a body sized by Content-Length, by
chunks, or by the end of the connection; no redirect is followed, no cookie kept, no
compression asked for. Any surprise closes the connection and raises `HttpFailed`.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

MAX_HEAD = 16384  # bytes of a response's status line and headers
MAX_INTERIM = 5  # 1xx heads skipped before the answer
IDLE_PER_ORIGIN = 64  # keep-alive connections kept idle per origin


class HttpFailed(Exception):
    """No complete answer: refused, cut, malformed or too large (`why` names which)."""

    def __init__(self, message: str, why: str = "connection") -> None:
        super().__init__(message)
        self.why = why


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go: its origin, and the request line's path and query."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection: bytes as they come, and a waiter woken when more do."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.received = 0  # bytes, ever: a reused connection that got none may be retried
        self.lost = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.received += len(data)
        self._wake()

    def eof_received(self) -> bool:
        self.lost = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def more(self) -> None:
        """Wait for more bytes; raises when the server closed the connection."""
        if self.lost:
            raise HttpFailed("the server closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """POSTs over kept-alive connections, per origin."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def post(self, target: Target, body: bytes, headers: Mapping[str, str],
                   max_body: int) -> Answer:
        """POST `body` and read the answer (its body up to `max_body` bytes). A kept-alive
        connection the server closed meanwhile is tried once more on a new one."""
        request = _request(target, body, headers)
        connection, reused = await self._connection(target)
        try:
            answer, keep = await _exchange(connection, request, max_body)
        except HttpFailed:
            connection.close()
            if not reused or connection.received:
                raise
            connection, _ = await self._connection(target, fresh=True)
            try:
                answer, keep = await _exchange(connection, request, max_body)
            except BaseException:
                connection.close()
                raise
        except BaseException:  # cancelled (a timeout) mid-answer: the connection is spent
            connection.close()
            raise
        if keep:
            self._keep(target, connection)
        else:
            connection.close()
        return answer

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _connection(self, target: Target, fresh: bool = False
                          ) -> tuple[_Connection, bool]:
        idle = self._idle.get(target.origin, [])
        while idle and not fresh:
            connection = idle.pop()
            if not connection.lost and not connection.buffer:
                connection.received = 0
                return connection, True
            connection.close()
        tls = self._tls_context() if target.scheme == "https" else None
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, target.host, target.port, ssl=tls,
                server_hostname=target.host if tls else None)
        except OSError as error:
            raise HttpFailed(f"cannot connect: {error}") from None
        return connection, False

    def _keep(self, target: Target, connection: _Connection) -> None:
        idle = self._idle.setdefault(target.origin, [])
        if len(idle) < IDLE_PER_ORIGIN and not connection.lost:
            idle.append(connection)
        else:
            connection.close()

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


def _request(target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header()}",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _exchange(connection: _Connection, request: bytes, max_body: int
                    ) -> tuple[Answer, bool]:
    """Send the request and read its answer; True with it when the connection may serve
    another request."""
    assert connection.transport is not None
    connection.transport.write(request)
    for _ in range(MAX_INTERIM + 1):
        status, fields, version = await _head(connection)
        if not 100 <= status < 200:
            break
    else:
        raise HttpFailed("too many interim answers", "malformed")
    keep = _keeps_alive(version, fields.get("connection", ""))
    if status in (204, 304):
        return Answer(status, b""), keep
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return Answer(status, await _chunked(connection, max_body)), keep
    if (length := fields.get("content-length")) is not None:
        return Answer(status, await _sized(connection, _length(length), max_body)), keep
    return Answer(status, await _until_closed(connection, max_body)), False


def _keeps_alive(version: str, connection: str) -> bool:
    tokens = {token.strip().lower() for token in connection.split(",")}
    return "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens


async def _head(connection: _Connection) -> tuple[int, dict[str, str], str]:
    buffer = connection.buffer
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > MAX_HEAD:
            raise HttpFailed("an answer's head over 16 KiB", "too_large")
        await connection.more()
    if end > MAX_HEAD:
        raise HttpFailed("an answer's head over 16 KiB", "too_large")
    head = bytes(buffer[:end]).decode("latin-1")
    del buffer[:end + 4]
    status_line, *lines = head.split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit():
        raise HttpFailed(f"not an HTTP answer: {status_line[:80]!r}", "malformed")
    fields: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpFailed("a malformed header line", "malformed")
        fields[name.strip().lower()] = value.strip()
    return int(code), fields, version


def _length(value: str) -> int:
    if not value.isdigit():
        raise HttpFailed(f"a bad Content-Length {value[:20]!r}", "malformed")
    return int(value)


async def _sized(connection: _Connection, length: int, max_body: int) -> bytes:
    if length > max_body:
        raise HttpFailed(f"an answer over {max_body} bytes", "too_large")
    while len(connection.buffer) < length:
        await connection.more()
    body = bytes(connection.buffer[:length])
    del connection.buffer[:length]
    return body


async def _chunked(connection: _Connection, max_body: int) -> bytes:
    body = bytearray()
    while True:
        size_line = await _line(connection)
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpFailed("a malformed chunk size", "malformed") from None
        if size == 0:
            while await _line(connection):  # trailers, up to the blank line
                pass
            return bytes(body)
        if len(body) + size > max_body:
            raise HttpFailed(f"an answer over {max_body} bytes", "too_large")
        body += await _sized(connection, size, max_body)
        if await _line(connection):
            raise HttpFailed("a chunk longer than its size", "malformed")


async def _line(connection: _Connection) -> bytes:
    buffer = connection.buffer
    while (end := buffer.find(b"\r\n")) < 0:
        if len(buffer) > MAX_HEAD:
            raise HttpFailed("a line over 16 KiB", "too_large")
        await connection.more()
    line = bytes(buffer[:end])
    del buffer[:end + 2]
    return line


async def _until_closed(connection: _Connection, max_body: int) -> bytes:
    while not connection.lost:
        if len(connection.buffer) > max_body:
            raise HttpFailed(f"an answer over {max_body} bytes", "too_large")
        try:
            await connection.more()
        except HttpFailed:
            break
    if len(connection.buffer) > max_body:
        raise HttpFailed(f"an answer over {max_body} bytes", "too_large")
    return bytes(connection.buffer)
