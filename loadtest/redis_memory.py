"""Redis memory per room and per stored message, measured through a real node.

    .venv/bin/python -m loadtest.redis_memory [--rooms 1000] [--messages 20] [--text 200]

Starts Redis and one node on loopback, reads Redis's `used_memory`, then: `--rooms` clients
each join a room of their own (a room with one member: its directory entry, presence and
history keys), a second member joins each, and the first ones send `--messages` messages of
`--text` characters each, then the second ones as many with a `clientId` each (the key that
makes a resend exactly-once, held for `--client-id-window`). Prints the bytes each step added
per room, per member, per message and per clientId; `--json` keeps them for the capacity
planner.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as redis
import uvloop

from gateway.cluster import Cluster
from loadtest import limits
from loadtest.results import save


async def _used(client: redis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while (event := json.loads((await ws.receive(timeout=30)).data))["type"] != kind:
        pass
    return dict(event)


async def _member(http: aiohttp.ClientSession, url: str, room: int, name: str
                  ) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url)
    await ws.send_json({"type": "auth", "name": name})
    await _next(ws, "auth_success")
    await ws.send_json({"type": "join", "room": f"mem{room}"})
    await _next(ws, "room_joined")
    return ws


async def _say(ws: aiohttp.ClientWebSocketResponse, count: int, text: str, keyed: bool = False
               ) -> None:
    for n in range(count):
        await ws.send_json({"type": "message", "text": text,
                            **({"clientId": f"k{n}"} if keyed else {})})
        await _next(ws, "message_sent" if keyed else "message")


async def measure(cluster: Cluster, rooms: int, messages: int, text: int) -> dict[str, float]:
    assert cluster.redis is not None
    client = redis.Redis(port=cluster.redis.port, password=cluster.redis_password)
    async with client, aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        url = cluster.node_ws_url(1)
        before = await _used(client)
        members = await asyncio.gather(*(_member(http, url, r, f"m{r}") for r in range(rooms)))
        with_rooms = await _used(client)
        members += await asyncio.gather(*(_member(http, url, r, f"n{r}") for r in range(rooms)))
        with_members = await _used(client)
        await asyncio.gather(*(_say(ws, messages, "x" * text) for ws in members[:rooms]))
        with_messages = await _used(client)
        await asyncio.gather(*(_say(ws, messages, "x" * text, keyed=True)
                               for ws in members[rooms:]))
        with_keys = await _used(client)
        await _forget_client_ids(client)
        without_keys = await _used(client)
        await asyncio.gather(*(ws.close() for ws in members))
    return {"bytes per room": (with_rooms - before) / rooms,
            "bytes per member": (with_members - with_rooms) / rooms,
            "bytes per message": (with_messages - with_members) / (rooms * messages),
            "bytes per clientId": (with_keys - without_keys) / (rooms * messages),
            "text": text}


async def _forget_client_ids(client: redis.Redis) -> None:
    """Delete the clientId keys (what their bytes are is what deleting them frees)."""
    keys = [key async for key in client.scan_iter(match="*:sent:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start:start + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.redis_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20, help="messages per room")
    parser.add_argument("--text", type=int, default=200, help="characters per message")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="redis-memory-")), 1, temporary=True,
                      node_args=[*limits.node_flags(), "--log-level", "WARNING",
                                 f"--max-rooms={args.rooms + 10}"])
    try:
        cluster.start()
        figures = uvloop.run(measure(cluster, args.rooms, args.messages, args.text))
    finally:
        cluster.stop()
    print("  ".join(f"{name}: {value:,.0f}" for name, value in figures.items()
                    if name != "text"),
          f"({args.text}-character messages, history of {args.messages} each)")
    if args.json:
        save(args.json, "redis_memory", "loadtest.redis_memory", args, figures)


if __name__ == "__main__":
    main()
