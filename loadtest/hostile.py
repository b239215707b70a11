"""Hostile-load benchmark: what an attacker costs a node, and its other clients.

    .venv/bin/python -m loadtest.hostile [--seconds 10] [--attacks fragments,pings,...]

Each attack runs against a fresh node with its shipped defaults (embedded mode) for
`--seconds`, from 127.0.0.1, while a canary (`loadtest.canary`, from 127.0.0.2) chats with
it. Printed per attack: the canary's p99 and anything it suffered, the node's CPU (seconds
per second) and RSS (before, peak, growth), and what the attacker achieved. Targets: canary
p99 < 50 ms, and RSS growth < --max-buffer + 16 MiB.

- fragments: a message that never ends, as tiny continuation frames, before `auth`
- pings: 125-byte pings as fast as the socket takes them, never reading the pongs
- slowloris: as many sockets as one address may hold, each sending a byte of a head a second
- slots: sockets from one address as fast as it can open them, held
- reconnect: a user that reconnects (resuming its identity) after every burst of messages
- history: a room's history filled with the largest messages that escape worst, then 200
  sockets that join it as often as allowed and never read (each join queues a reply of
  history, at most --history-reply-bytes)
- joins: one connection re-joining the same room as fast as the node answers
- churn: a new anonymous user for every burst, each creating a room and sending a burst
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from gateway.processes import LOOPBACK, Service, start_node
from loadtest import canary as canary_process
from loadtest import procstats, scrape
from loadtest.results import save
from node.config import Settings

DEFAULTS = Settings()
CANARY_INTERVAL = 0.25  # 4 messages a second: within every per-user default


@dataclass
class Outcome:
    """What one attack achieved, in its own words."""

    facts: dict[str, Any] = field(default_factory=dict)


Attack = Callable[[int, float, Outcome], Awaitable[None]]


def _upgrade_head() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n\r\n").encode()


def _frame(first: int, payload: bytes) -> bytes:
    """A client frame masked with the all-zero key (the payload stays as it is)."""
    return struct.pack("!BB", first, 0x80 | len(payload)) + b"\0\0\0\0" + payload


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    writer.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that barely reads
    return reader, writer


async def _flood(port: int, seconds: float, outcome: Outcome, first: bytes, frame: bytes,
                 name: str) -> None:
    """Upgrade, send `first`, then `frame` as fast as the node takes it; reconnect when
    closed. Counts frames and connections."""
    deadline = time.monotonic() + seconds
    batch = frame * 1000
    frames = connections = 0
    while time.monotonic() < deadline:
        reader, writer = await _open(port)
        connections += 1
        writer.write(_upgrade_head() + first)
        try:
            while time.monotonic() < deadline:
                writer.write(batch)
                await asyncio.wait_for(writer.drain(), max(0.01, deadline - time.monotonic()))
                frames += 1000
        except (OSError, TimeoutError):
            pass
        finally:
            writer.transport.abort()
    outcome.facts.update({f"{name} sent": frames, "connections used": connections})


async def fragments(port: int, seconds: float, outcome: Outcome) -> None:
    await _flood(port, seconds, outcome, _frame(0x01, b"x"), _frame(0x00, b""), "fragments")


async def pings(port: int, seconds: float, outcome: Outcome) -> None:
    await _flood(port, seconds, outcome, b"", _frame(0x89, b"p" * 125), "pings")


async def slowloris(port: int, seconds: float, outcome: Outcome) -> None:
    """Hold as many half-sent heads as one address may, one byte each second."""
    head = b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100_000
    writers: list[asyncio.StreamWriter] = []
    for _ in range(DEFAULTS.max_connections_per_address):
        try:
            writers.append((await _open(port))[1])
        except OSError:
            break
    deadline, at, cut = time.monotonic() + seconds, 0, 0
    while time.monotonic() < deadline:
        for writer in writers:
            if not writer.transport.is_closing():
                writer.write(head[at:at + 1])
        at += 1
        await asyncio.sleep(1.0)
        cut = sum(w.transport.is_closing() for w in writers)
    for writer in writers:
        writer.transport.abort()
    outcome.facts.update({"sockets opened": len(writers), "closed by the node": cut})


async def slots(port: int, seconds: float, outcome: Outcome) -> None:
    """Open sockets until the node refuses them; hold them for the rest of the time."""
    deadline = time.monotonic() + seconds
    held: list[asyncio.StreamWriter] = []
    refused = 0
    while time.monotonic() < deadline and refused < 50 and len(held) < 20_000:
        reader, writer = await _open(port)
        writer.write(_upgrade_head())
        line = await asyncio.wait_for(reader.readline(), 5)
        if b" 101 " in line:
            held.append(writer)
        else:
            refused += 1
            writer.transport.abort()
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    for writer in held:
        writer.transport.abort()
    outcome.facts.update({"sockets held": len(held), "refused after": refused})


async def reconnect(port: int, seconds: float, outcome: Outcome) -> None:
    """One user, reconnecting with its resume token after every burst of 30 messages."""
    deadline = time.monotonic() + seconds
    identity: dict[str, str] = {}
    stored = sent = rounds = 0
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.ws_connect(f"ws://{LOOPBACK}:{port}/ws") as ws:
                await ws.send_json({"type": "auth", "name": "mallory", **identity})
                auth = await ws.receive_json(timeout=5)
                identity = {"userId": auth["userId"], "token": auth["token"]}
                await ws.send_json({"type": "join", "room": "hostile"})
                await ws.receive_json(timeout=5)
                for n in range(30):
                    await ws.send_json({"type": "message", "text": f"burst {rounds}:{n}"})
                sent += 30
                stored += await _count_delivered(ws)
            rounds += 1
    most = DEFAULTS.user_burst + int(DEFAULTS.user_rate * seconds)
    outcome.facts.update({"messages sent": sent, "stored": stored, "reconnects": rounds,
                          "user budget": f"{DEFAULTS.user_burst} at once, then "
                          f"{DEFAULTS.user_rate:g}/s: at most {most} in {seconds:g} s"})


async def history(port: int, seconds: float, outcome: Outcome) -> None:
    """Fill a room's history with messages that escape to twice their size, then make 200
    sockets that never read join it as often as the join rate allows."""
    node = f"http://{LOOPBACK}:{port}"
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{node}/ws") as ws:
        await ws.send_json({"type": "auth", "name": "filler"})
        await ws.send_json({"type": "join", "room": "heavy"})
        for _ in range(30):
            await ws.send_json({"type": "message", "text": '"' * DEFAULTS.max_text})
            await asyncio.sleep(1.0 / DEFAULTS.user_rate)
    join = _frame(0x81, b'{"type":"join","room":"heavy"}')
    writers = []
    for _ in range(200):  # each joins at once as often as its burst allows
        reader, writer = await _open(port)
        writer.write(_upgrade_head() + _frame(0x81, b'{"type":"auth"}')
                     + join * DEFAULTS.join_burst)
        writers.append(writer)
    deadline, queued = time.monotonic() + seconds, 0.0
    while time.monotonic() < deadline:  # then as fast as the join rate allows, never reading
        await asyncio.sleep(1.0 / DEFAULTS.join_rate)
        for writer in writers:
            if not writer.transport.is_closing():
                writer.write(join)
        queued = max(queued, await asyncio.to_thread(
            scrape.gauge, node, "chat_output_queued_bytes") or 0.0)
    closed = await asyncio.to_thread(scrape.sample, node, "chat_closes_total", code="1013")
    for writer in writers:
        writer.transport.abort()
    outcome.facts.update({"non-reading sockets": len(writers), "closed 1013": int(closed),
                          "queued peak MiB": round(queued / 2**20, 1)})


async def joins(port: int, seconds: float, outcome: Outcome) -> None:
    """One connection sending joins of the same room as fast as it can."""
    deadline = time.monotonic() + seconds
    answered = refused = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"ws://{LOOPBACK}:{port}/ws") as ws:
        await ws.send_json({"type": "auth", "name": "joiner"})
        while time.monotonic() < deadline and not ws.closed:
            await ws.send_json({"type": "join", "room": "general"})
            event = await _next_answer(ws)
            answered += event == "room_joined"
            refused += event == "error"
    outcome.facts.update({"joins answered": answered, "refused": refused,
                          "closed by the node": ws.close_code})


async def churn(port: int, seconds: float, outcome: Outcome) -> None:
    """A fresh anonymous user per round: it creates a room and sends a burst."""
    deadline = time.monotonic() + seconds
    users = refused = rooms = stored = 0
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.ws_connect(f"ws://{LOOPBACK}:{port}/ws") as ws:
                await ws.send_json({"type": "auth", "name": f"churn{users + refused}"})
                if await _next_answer(ws) != "auth_success":
                    refused += 1
                    continue
                users += 1
                await ws.send_json({"type": "join", "room": f"churn{users}"})
                rooms += await _next_answer(ws) == "room_joined"
                for n in range(20):
                    await ws.send_json({"type": "message", "text": f"burst {n}"})
                stored += await _count_delivered(ws)
    outcome.facts.update({"new users": users, "refused": refused, "rooms created": rooms,
                          "messages stored": stored})


async def _next_answer(ws: aiohttp.ClientWebSocketResponse) -> str:
    """The type of the next event that answers a request (presence and pings skipped), or
    "closed" when the node closed the socket."""
    while True:
        frame = await ws.receive(timeout=5)
        if frame.type is not aiohttp.WSMsgType.TEXT:
            return "closed"
        kind = str(json.loads(frame.data)["type"])
        if kind not in ("ping", "user_joined", "user_left", "user_count", "message"):
            return kind


ATTACKS: dict[str, Attack] = {"fragments": fragments, "pings": pings, "slowloris": slowloris,
                              "slots": slots, "reconnect": reconnect, "history": history,
                              "joins": joins, "churn": churn}


async def _count_delivered(ws: aiohttp.ClientWebSocketResponse) -> int:
    """Messages the node stored and delivered back, until it goes quiet for 200 ms."""
    delivered = 0
    try:
        while True:
            event = await ws.receive_json(timeout=0.2)
            delivered += event.get("type") == "message"
    except (TimeoutError, TypeError, ValueError):
        return delivered


async def _sample_rss(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], procstats.memory_kib(pid, "VmRSS"))
        await asyncio.sleep(0.1)


async def _run_attack(node: Service, attack: Attack, seconds: float) -> dict[str, Any]:
    pid = node.process.pid
    rss_before = procstats.memory_kib(pid, "VmRSS")
    canary = canary_process.start(f"ws://{LOOPBACK}:{node.port}/ws", seconds + 2,
                                  CANARY_INTERVAL, "127.0.0.2")
    await asyncio.sleep(1.0)  # the canary is chatting before the attack starts
    cpu_before, started = procstats.cpu_seconds([pid]), time.monotonic()
    peak, stop = [rss_before], asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pid, stop, peak))
    outcome = Outcome()
    try:
        await asyncio.wait_for(attack(node.port, seconds, outcome), seconds + 30)
    finally:
        stop.set()
        await sampler
    cpu = (procstats.cpu_seconds([pid]) - cpu_before) / (time.monotonic() - started)
    report = await asyncio.to_thread(canary_process.result, canary, 60)
    return {"canary p99 ms": report["p99_ms"], "canary sent/received":
            f"{report['sent']}/{report['received']}", "canary problems": report["problems"],
            "node CPU s/s": round(cpu, 2), "RSS before MiB": round(rss_before / 1024, 1),
            "RSS peak MiB": round(peak[0] / 1024, 1),
            "RSS growth MiB": round((peak[0] - rss_before) / 1024, 1), **outcome.facts}


async def run(attacks: list[str], seconds: float) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    procstats.raise_fd_limit()
    for name in attacks:
        with tempfile.TemporaryDirectory(prefix=f"hostile-{name}-") as run_dir:
            node = start_node(Path(run_dir), f"hostile-{name}", None, ["--log-level", "WARNING"])
            try:
                results[name] = await _run_attack(node, ATTACKS[name], seconds)
            finally:
                node.stop()
        print(f"{name:10} " + "  ".join(f"{k}: {v}" for k, v in results[name].items()),
              flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each attack")
    parser.add_argument("--attacks", default=",".join(ATTACKS),
                        help=f"comma-separated, from {', '.join(ATTACKS)}")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    print(f"each attack: {args.seconds:g} s against a node with its default limits "
          f"(max-buffer {DEFAULTS.max_buffer // 2**20} MiB: RSS growth target "
          f"< {DEFAULTS.max_buffer // 2**20 + 16} MiB; canary p99 target < 50 ms)", flush=True)
    results = uvloop.run(run(attacks, args.seconds))
    if args.json:
        save(args.json, "hostile", "loadtest.hostile", args, {"results": results})


if __name__ == "__main__":
    main()
