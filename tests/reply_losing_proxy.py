"""A loopback proxy to Redis that passes calls on and loses the answer to one: a call Redis
ran whose reply never came back (the connection is cut instead), the case in which a
client cannot know whether its write happened."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def reply_losing_proxy(redis_port: int, marker: bytes = b"", every_connection: bool = True
                             ) -> AsyncIterator[int]:
    """Yields the proxy's port. A connection is cut instead of passing back the reply to the
    first call that carries `marker` (any call, by default): on every connection, or (not
    `every_connection`) on the first such connection only, later ones passing everything."""
    lost: list[bool] = []

    async def pass_back(upstream: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        losing: asyncio.Event) -> None:
        while data := await upstream.read(65536):
            if losing.is_set():
                writer.transport.abort()  # the reply is lost
                return
            writer.write(data)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", redis_port)
        losing = asyncio.Event()
        replies = asyncio.create_task(pass_back(upstream_reader, writer, losing))
        try:
            while data := await reader.read(65536):
                if marker in data and (every_connection or not lost):
                    lost.append(True)
                    losing.set()
                upstream.write(data)
                await upstream.drain()
        except ConnectionError:
            pass
        finally:
            replies.cancel()
            upstream.close()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
