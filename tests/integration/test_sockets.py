"""Every socket is timed, bounded and counted, whatever it asks for and however it sends it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

WAIT = 5.0
UPGRADE = ("GET /ws HTTP/1.1\r\nHost: node\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{extra}\r\n")


def upgrade(extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return UPGRADE.format(key=key, extra=extra).encode()


Socket = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
def backend() -> str:
    """The socket layer is the same whatever holds the chat state."""
    return "memory"


@pytest.fixture
async def open_socket() -> AsyncIterator[Callable[..., Awaitable[Socket]]]:
    """Raw TCP sockets to a node; all closed after the test."""
    opened: list[asyncio.StreamWriter] = []

    async def open_to(node) -> Socket:
        reader, writer = await asyncio.open_connection(node.server.host, node.server.port)
        opened.append(writer)
        return reader, writer

    yield open_to
    for writer in opened:
        writer.close()
        with contextlib.suppress(OSError):
            await asyncio.wait_for(writer.wait_closed(), WAIT)


async def status_line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), WAIT)


async def answer(open_socket, node, data: bytes) -> bytes:
    """The status line the node answers `data` with, on a socket of its own."""
    reader, writer = await open_socket(node)
    writer.write(data)
    return await status_line(reader)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the node closes the socket (an abort counts as closing)."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


async def sockets(node) -> dict[str, int]:
    return (await (await node.get("/api/status")).json())["sockets"]


async def wait_for_sockets(node, **expected: int) -> dict[str, int]:
    """Poll the status until the counts match (sockets close asynchronously)."""
    async with asyncio.timeout(WAIT):
        while True:
            counts = await sockets(node)
            if all(counts[kind] == n for kind, n in expected.items()):
                return counts
            await asyncio.sleep(0.02)


async def test_a_head_over_the_limit_gets_431_in_one_write(make_node, open_socket) -> None:
    node = await make_node(max_head=2048)
    line = await answer(open_socket, node, upgrade("X-Pad: " + "a" * 3000 + "\r\n"))
    assert line.startswith(b"HTTP/1.1 431")


async def test_a_head_over_the_limit_gets_431_in_pieces(make_node, open_socket) -> None:
    node = await make_node(max_head=2048)
    reader, writer = await open_socket(node)
    writer.write(b"GET /api/status HTTP/1.1\r\nX-Pad: ")
    for _ in range(25):  # 2,500 bytes more, none of them ending the head
        await writer.drain()
        writer.write(b"a" * 100)
    assert (await status_line(reader)).startswith(b"HTTP/1.1 431")


async def test_a_head_of_exactly_the_limit_is_served(make_node, open_socket) -> None:
    node = await make_node(max_head=2048)
    head = b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Pad: "
    head += b"a" * (2048 - len(head) - 2) + b"\r\n"
    assert len(head) == 2048
    assert (await answer(open_socket, node, head + b"\r\n")).startswith(b"HTTP/1.1 200")


async def test_an_upgrade_with_a_large_cookie_within_the_limit_is_accepted(
        make_node, open_socket) -> None:
    node = await make_node(max_head=32768)
    line = await answer(open_socket, node, upgrade("Cookie: c=" + "z" * 23000 + "\r\n"))
    assert line.startswith(b"HTTP/1.1 101")


async def test_a_silent_socket_is_closed_after_the_handshake_timeout(make_node, open_socket) -> None:
    node = await make_node(handshake_timeout=0.3)
    reader, writer = await open_socket(node)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
    assert await read_to_end(reader) == b""


async def test_the_head_timeout_holds_for_later_requests_on_a_kept_alive_socket(
        make_node, open_socket) -> None:
    node = await make_node(handshake_timeout=0.3, keepalive_timeout=30)
    reader, writer = await open_socket(node)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
    assert (await status_line(reader)).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: n")  # a second head, never finished
    data = await read_to_end(reader)
    assert data.count(b"HTTP/1.1") == 0  # closed without a second answer


async def test_an_idle_kept_alive_socket_is_closed_after_the_keepalive_timeout(
        make_node, open_socket) -> None:
    node = await make_node(keepalive_timeout=0.3)
    reader, writer = await open_socket(node)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
    assert (await status_line(reader)).startswith(b"HTTP/1.1 200")
    await read_to_end(reader)  # returns once the node closes the idle socket
    assert reader.at_eof()


async def test_pipelined_requests_are_answered_one_at_a_time(make_node, open_socket) -> None:
    node = await make_node()
    reader, writer = await open_socket(node)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n" * 5
                 + b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
    data = await read_to_end(reader)
    assert data.count(b"HTTP/1.1 200 OK") == 6


async def test_a_body_over_the_limit_gets_413(make_node, open_socket) -> None:
    node = await make_node()
    reader, writer = await open_socket(node)
    writer.write(b"POST /admin/drain HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n")
    assert (await status_line(reader)).startswith(b"HTTP/1.1 413")


async def test_every_socket_counts_by_kind_and_toward_the_limit(make_node, connect,
                                                                open_socket) -> None:
    node = await make_node(max_connections=4)
    await connect(node)
    idle = [await open_socket(node) for _ in range(2)]  # sent nothing yet
    counts = await wait_for_sockets(node, chat=1, pending=2)
    assert counts["total"] == 4  # the status request itself is the fourth
    reader, writer = await open_socket(node)
    writer.write(upgrade())
    assert (await status_line(reader)).startswith(b"HTTP/1.1 503")
    for _, idle_writer in idle:
        idle_writer.close()
    await wait_for_sockets(node, pending=0, total=2)  # the chat socket and the status one


async def test_one_address_cannot_take_more_than_its_share(make_node, open_socket) -> None:
    node = await make_node(max_connections_per_address=2)
    for _ in range(2):
        reader, writer = await open_socket(node)
        writer.write(upgrade())
        assert (await status_line(reader)).startswith(b"HTTP/1.1 101")
    reader, writer = await open_socket(node)
    writer.write(upgrade())
    assert (await status_line(reader)).startswith(b"HTTP/1.1 429")


async def test_the_gateway_header_names_the_client_only_from_a_trusted_proxy(
        make_node, open_socket) -> None:
    node = await make_node(max_connections_per_address=1, trusted_proxies="127.0.0.0/8")
    for client in ("203.0.113.1", "203.0.113.2"):  # one socket each: within their share
        reader, writer = await open_socket(node)
        writer.write(upgrade(f"X-Real-IP: {client}\r\n"))
        assert (await status_line(reader)).startswith(b"HTTP/1.1 101")
    reader, writer = await open_socket(node)
    writer.write(upgrade("X-Forwarded-For: 198.51.100.9, 203.0.113.1\r\n"))
    assert (await status_line(reader)).startswith(b"HTTP/1.1 429")  # 203.0.113.1's second


async def test_an_untrusted_peer_cannot_pick_its_address(make_node, open_socket) -> None:
    node = await make_node(max_connections_per_address=2)
    reader, writer = await open_socket(node)
    writer.write(upgrade("X-Real-IP: 203.0.113.7\r\n"))
    assert (await status_line(reader)).startswith(b"HTTP/1.1 101")
    other_reader, other = await open_socket(node)
    other.write(upgrade("X-Real-IP: 203.0.113.8\r\n"))
    # 127.0.0.1 holds this socket, the first one and (a moment ago) nothing else
    assert (await status_line(other_reader)).startswith(b"HTTP/1.1 101")
    third_reader, third = await open_socket(node)
    third.write(upgrade("X-Real-IP: 203.0.113.9\r\n"))
    assert (await status_line(third_reader)).startswith(b"HTTP/1.1 429")


@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff\xfe\r\n",
                                    b"X-Whatever: \xc3\x28\r\n"])
async def test_non_utf8_header_bytes_never_reach_a_500(make_node, open_socket,
                                                      header: bytes) -> None:
    node = await make_node(admin_token="secret")
    reader, writer = await open_socket(node)
    writer.write(b"POST /admin/drain HTTP/1.1\r\nHost: node\r\n" + header + b"\r\n")
    line = await status_line(reader)
    assert line.startswith((b"HTTP/1.1 400", b"HTTP/1.1 401")), line
