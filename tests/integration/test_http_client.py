"""The hooks' HTTP client (node.hooks.http_client) against real servers on loopback: aiohttp,
and raw sockets answering the ways HTTP/1.1 and 1.0 allow (sized, chunked, until closed,
interim 100s) and the ways they must not (too large, malformed, cut)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from gateway.processes import LOOPBACK, free_port
from node.hooks.http_client import HttpClient, HttpFailed, Target

pytestmark = pytest.mark.timeout(30)
Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Reply], Awaitable[Target]]]:
    """A server whose every connection the test answers byte by byte."""
    servers: list[asyncio.Server] = []

    async def serve(reply: Reply) -> Target:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reply(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, LOOPBACK, 0)
        servers.append(server)
        return Target.of(f"http://{LOOPBACK}:{server.sockets[0].getsockname()[1]}/hook")

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


async def _request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (sized by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


def _answers(*answers: bytes) -> Reply:
    """Answer each request of a connection with the next of `answers`; then close."""
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await _request(reader)
            writer.write(answer)
            await writer.drain()
    return reply


async def test_posts_to_aiohttp_over_one_kept_alive_connection(client) -> None:
    peers: set[tuple[str, int]] = set()
    seen: list[tuple[str, bytes, str]] = []

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        seen.append((request.path_qs, await request.read(), request.headers["webhook-id"]))
        return web.json_response({"result": "accept"})

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    try:
        target = Target.of(f"http://{LOOPBACK}:{port}/hook?key=1")
        for n in range(3):
            answer = await client.post(target, b'{"n": %d}' % n, {"webhook-id": f"id{n}"}, 1024)
            assert (answer.status, answer.body) == (200, b'{"result": "accept"}')
    finally:
        await runner.cleanup()
    assert seen == [("/hook?key=1", b'{"n": %d}' % n, f"id{n}") for n in range(3)]
    assert len(peers) == 1  # one connection for all three


@pytest.mark.parametrize("answer,body", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n", b"abcde"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", b"x"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    (b"HTTP/1.0 200 OK\r\n\r\nuntil closed", b"until closed"),
])
async def test_every_way_of_sizing_a_body(client, raw_server, answer: bytes, body: bytes
                                          ) -> None:
    target = await raw_server(_answers(answer))
    got = await client.post(target, b"{}", {}, 1024)
    assert got.body == body and 200 <= got.status < 300


@pytest.mark.parametrize("answer,why", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", "too_large"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048, "too_large"),
    (b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 2000, "too_large"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20000 + b"\r\n\r\n", "too_large"),
    (b"SMTP ready\r\n\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncut", "connection"),
    (b"", "connection"),
])
async def test_a_bad_answer_fails_with_why(client, raw_server, answer: bytes, why: str
                                           ) -> None:
    target = await raw_server(_answers(answer))
    with pytest.raises(HttpFailed) as failed:
        await client.post(target, b"{}", {}, 1024)
    assert failed.value.why == why


async def test_a_kept_connection_the_server_closed_is_tried_again_on_a_new_one(
        client, raw_server) -> None:
    """The server answers one request a connection and closes it while it idles."""
    target = await raw_server(_answers(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"))
    for _ in range(3):
        assert (await client.post(target, b"{}", {}, 1024)).body == b"a"


async def test_connection_close_and_refused_connections(client, raw_server) -> None:
    target = await raw_server(_answers(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na"))
    assert (await client.post(target, b"{}", {}, 1024)).body == b"a"
    with pytest.raises(HttpFailed) as refused:
        await client.post(Target.of(f"http://{LOOPBACK}:{free_port()}/"), b"{}", {}, 1024)
    assert refused.value.why == "connection"


async def test_a_timeout_mid_answer_spends_the_connection(client, raw_server) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
        await writer.drain()
        await asyncio.sleep(5)

    target = await raw_server(slow)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.post(target, b"{}", {}, 1024)
    assert not client._idle.get(target.origin)  # nothing half-read is reused


def test_targets_and_host_headers() -> None:
    assert Target.of("https://example.com/h?x=1") == Target("https", "example.com", 443, "/h?x=1")
    assert Target.of("http://[::1]:8080").host_header() == "[::1]:8080"
    assert Target.of("http://a").path == "/"
    with pytest.raises(ValueError):
        Target.of("ftp://a/")
