"""A network fault between hosts, under the checker: what it costs clients, as an operator
would see it (issue 29; the suite's schedules are tests/integration/test_partitions.py).

    .venv/bin/python -m loadtest.partitions --fault redis-cut [--redis-cluster] [--seconds 6.5]

Builds the fault hosts (tests/fault_hosts.py: Redis, or a Redis Cluster of 3 + 3, two nodes
with their default limits and the gateway, each on a network namespace of its own; needs root,
iproute2 and nftables), puts 3 members on each node and a writer on each (10 messages a
second each; through the gateway for `gateway-cut`), plays the fault for `--seconds` and
heals it, then prints the checker's verdict: acknowledged messages lost unreported,
duplicates and disorder (all must be 0), each writer's longest wait without an
acknowledgement, what clients were told, and when every member's list was right again.
Exits 1 when the verdict is not clean. Every namespace, rule and process is gone afterwards.

Faults: `redis-cut` (node1 ↔ the room's Redis, both ways), `redis-deaf` (Redis → node1
only), `gateway-cut` (gateway ↔ node1), `clients-cut` (the clients' path to node1, without
a close).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.checker import Verdict, run_workload
from tests.fault_hosts import CLIENT_HEARTBEAT, Hosts, fault_hosts, report
from tests.fault_net import missing

ROOM = "partition"
INTERVAL = 0.1  # a writer's pause between messages: within a user's default budget
SETTLE = 2.0  # seconds of writing before the fault, and of healing after it


def _faults(hosts: Hosts) -> dict[str, Callable[[], None]]:
    """How each fault is made; `hosts.net.heal()` undoes any."""
    net, node1 = hosts.net, hosts.nodes[0]
    return {
        "redis-cut": lambda: net.cut(node1, hosts.redis_of(ROOM)),
        "redis-deaf": lambda: net.cut(hosts.redis_of(ROOM), node1, one_way=True),
        "gateway-cut": lambda: net.cut(hosts.gateway, node1),
        "clients-cut": lambda: net.cut_client(node1),
    }


def schedule(hosts: Hosts, fault: str, seconds: float) -> Callable[[], Awaitable[float]]:
    """The fault played once: SETTLE s of writing, the fault for `seconds`, SETTLE s after;
    returns when the fault began."""
    make = _faults(hosts)[fault]

    async def play() -> float:
        await asyncio.sleep(SETTLE)
        make()
        faulted_at = time.monotonic()
        await asyncio.sleep(seconds)
        hosts.net.heal()
        await asyncio.sleep(SETTLE)
        return faulted_at

    return play


async def measure(hosts: Hosts, fault: str, seconds: float) -> Verdict:
    """Three members on each node, a writer on each (both through the gateway when the
    fault is the gateway's), under the fault."""
    through_gateway = fault == "gateway-cut"
    urls = [hosts.ws_url(0), hosts.ws_url(1)]
    members = {f"m{node + 1}.{n}": urls[node] for node in (0, 1) for n in range(3)}
    writers = [hosts.gateway_url] * 2 if through_gateway else urls
    return await run_workload(members, writers, ROOM, schedule(hosts, fault, seconds),
                              interval=INTERVAL, heartbeat=CLIENT_HEARTBEAT)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.partitions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", choices=["redis-cut", "redis-deaf", "gateway-cut",
                                            "clients-cut"], default="redis-cut")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="a Redis Cluster of 3 primaries and 3 replicas, not one Redis")
    parser.add_argument("--seconds", type=float, default=6.5,
                        help="how long the fault lasts (0.5 to 60)")
    args = parser.parse_args()
    if not 0.5 <= args.seconds <= 60:
        parser.error("--seconds must be 0.5 to 60")
    if (lacking := missing()) is not None:
        parser.error(f"{lacking} (apt-get install iproute2 nftables)")
    kind = "redis-cluster" if args.redis_cluster else "redis"
    with tempfile.TemporaryDirectory(prefix="chat-partitions-") as run_dir, \
            fault_hosts(kind, Path(run_dir), node_flags=[]) as hosts:
        verdict = asyncio.run(measure(hosts, args.fault, args.seconds))
    print(f"{args.fault} for {args.seconds:g} s ({kind}): {report(verdict)}")
    sys.exit(0 if verdict.valid else 1)


if __name__ == "__main__":
    main()
