"""A well-behaved chat client that measures what others cost it: `python -m loadtest.canary`.

It joins a room of its own, sends a message every `--interval` seconds and times each one
until the node delivers it back; after `--duration` seconds (or at SIGTERM/SIGINT) it prints
one JSON line: messages sent and received, round-trip percentiles in ms, and every close or
error it met. It runs in a process of its own so that the load next to it cannot slow its
clock, and it can bind a source address of its own (127.0.0.2) so that per-address limits on
an attacker from 127.0.0.1 are not its limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field

import aiohttp
import uvloop

from gateway.processes import die_with_launcher
from loadtest.stats import percentile


@dataclass
class Report:
    sent: int = 0
    received: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    problems: list[str] = field(default_factory=list)


def start(url: str, seconds: float, interval: float, source: str) -> subprocess.Popen[str]:
    """The canary in a process of its own, chatting on `url` for `seconds` (and stopped if
    this process ends first)."""
    return subprocess.Popen(
        [sys.executable, "-m", "loadtest.canary", "--url", url, "--duration", str(seconds),
         "--interval", str(interval), "--source", source], stdout=subprocess.PIPE, text=True,
        preexec_fn=die_with_launcher(os.getpid()))


def result(canary: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    """The report a canary `start`ed prints when its time is up (killed past `timeout`)."""
    try:
        out = canary.communicate(timeout=timeout)[0]
    finally:
        if canary.poll() is None:
            canary.kill()
            canary.wait()
    return dict(json.loads(out))


async def chat(url: str, duration: float, interval: float, source: str | None,
               stop: asyncio.Event) -> Report:
    report = Report()
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
            await ws.send_json({"type": "auth", "name": f"canary-{uuid.uuid4().hex[:6]}"})
            await ws.send_json({"type": "join", "room": f"canary-{uuid.uuid4().hex[:8]}"})
            sent_at: dict[str, float] = {}
            times: list[float] = []
            reader = asyncio.create_task(_receive(ws, sent_at, times, report))
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline and not stop.is_set() and not reader.done():
                text = f"c{report.sent}"
                sent_at[text] = time.perf_counter()
                await ws.send_json({"type": "message", "text": text})
                report.sent += 1
                await _pause(stop, interval)
            await asyncio.sleep(min(1.0, interval * 10))  # the last ones come back
            reader.cancel()
    times.sort()
    report.received = len(times)
    report.p50_ms = round((percentile(times, 0.5) or 0.0) * 1000, 2)
    report.p99_ms = round((percentile(times, 0.99) or 0.0) * 1000, 2)
    report.max_ms = round(times[-1] * 1000, 2) if times else 0.0
    return report


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def _receive(ws: aiohttp.ClientWebSocketResponse, sent_at: dict[str, float],
                   times: list[float], report: Report) -> None:
    async for message in ws:
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        event = json.loads(message.data)
        if event["type"] == "message" and event["text"] in sent_at:
            times.append(time.perf_counter() - sent_at.pop(event["text"]))
        elif event["type"] == "ping":
            await ws.send_json({"type": "pong", "timestamp": event["timestamp"]})
        elif event["type"] == "error":
            report.problems.append(f"error {event['code']}")
    if ws.close_code is not None:
        report.problems.append(f"closed {ws.close_code}")


async def _main(args: argparse.Namespace) -> Report:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await chat(args.url, args.duration, args.interval, args.source, stop)
    except (aiohttp.ClientError, OSError) as exc:
        return Report(problems=[f"could not chat: {exc}"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.canary", description=__doc__)
    parser.add_argument("--url", required=True, help="the chat WebSocket, e.g. ws://127.0.0.1:8000/ws")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to chat")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between messages")
    parser.add_argument("--source", help="local address to connect from, e.g. 127.0.0.2")
    report = uvloop.run(_main(parser.parse_args()))
    print(json.dumps(asdict(report)), flush=True)
    sys.exit(0 if report.received else 1)


if __name__ == "__main__":
    main()
