"""Webhook delivery rate per node: how many events a second one node delivers, and its CPU
per webhook.

    .venv/bin/python -m loadtest.webhook_rate --events 20000 --rooms 20

Starts a cluster of one node (and its Redis) sending every event to a backend
(loadtest.hook_backend, answering at once), stops that backend, queues `--events` messages
over `--rooms` rooms through the server API, starts the backend again and times the node
emptying its queue: events/s, the node's CPU per webhook, the backend's and Redis's CPU.
Every wait is bounded."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gateway.cluster import Cluster
from gateway.processes import LOOPBACK, Service, free_port, wait_until
from gateway.tokens import new_hook_secret, new_secret
from loadtest import limits, procstats
from node.client.server_api import ServerAPI

BATCH = 100  # commands a server API batch carries at most
DELIVERED = re.compile(r'chat_webhook_deliveries_total\{endpoint="[^"]*",result="ok"\} (\S+)')
TIMEOUT = 600.0  # seconds the delivery may take at most


def _backend(cluster: Cluster, port: int) -> Service:
    service = cluster.children.spawn(
        f"backend-{time.monotonic_ns()}", [sys.executable, "-m", "loadtest.hook_backend",
                                           "--port", str(port), "--delay-ms", "0"],
        port, cluster.run_dir / "backend.log")
    wait_until(service, lambda: _answering(f"http://{LOOPBACK}:{port}/probe"))
    return service


def _answering(url: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=1).close()
        return True
    except OSError:
        return False


def _delivered(cluster: Cluster) -> float:
    with urllib.request.urlopen(cluster.node_url(1) + "/metrics", timeout=10) as response:
        return sum(float(value) for value in DELIVERED.findall(response.read().decode()))


async def _queue(cluster: Cluster, key: str, rooms: list[str], events: int) -> None:
    api = ServerAPI(cluster.api_url(1), key)
    try:
        for start in range(0, events, BATCH):
            await api.batch([{"command": "publish", "room": rooms[i % len(rooms)],
                              "text": f"event {i}"} for i in range(start,
                                                                  min(events, start + BATCH))])
    finally:
        await api.close()


def run(args: argparse.Namespace) -> None:
    port = free_port()
    rooms = [f"room{i}" for i in range(args.rooms)]
    key = new_secret()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="webhook-rate-")), 1, api_key=key,
                      node_env={"CHAT_HOOK_SECRET": new_hook_secret()},
                      node_args=[*limits.node_flags(), "--log-level", "WARNING",
                                 "--rooms", ",".join(rooms), "--api-rate", "100000",
                                 "--api-burst", "100000", "--webhook-url",
                                 f"http://{LOOPBACK}:{port}/events#message",
                                 "--webhook-max-backoff", "0.5",
                                 "--webhook-concurrency", str(args.concurrency)],
                      temporary=True)
    try:
        cluster.start()
        backend = _backend(cluster, port)
        backend.stop()
        asyncio.run(_queue(cluster, key, rooms, args.events))
        assert cluster.redis is not None
        node, redis = cluster.nodes[0].process.pid, cluster.redis.process.pid
        backend = _backend(cluster, port)
        pids = {"node": node, "redis": redis, "backend": backend.process.pid}
        cpu_before = {name: procstats.cpu_seconds([pid]) for name, pid in pids.items()}
        started = time.monotonic()
        while _delivered(cluster) < args.events:
            if time.monotonic() - started > TIMEOUT:
                raise SystemExit(f"not delivered within {TIMEOUT:g} s")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        cpu = {name: procstats.cpu_seconds([pid]) - cpu_before[name]
               for name, pid in pids.items()}
        print(f"{args.events} webhooks over {args.rooms} rooms in {seconds:.2f} s: "
              f"{args.events / seconds:,.0f}/s from one node; CPU s node {cpu['node']:.2f} "
              f"({1e6 * cpu['node'] / args.events:.0f} µs a webhook), redis {cpu['redis']:.2f}, "
              f"backend {cpu['backend']:.2f}", flush=True)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.webhook_rate",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16,
                        help="the node's --webhook-concurrency")
    args = parser.parse_args()
    if args.events <= 0 or args.rooms <= 0:
        parser.error("--events and --rooms must be positive")
    run(args)


if __name__ == "__main__":
    main()
