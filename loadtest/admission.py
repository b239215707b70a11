"""Admission: how many full chat sessions per second one node takes, and what a burst does.

    .venv/bin/python -m loadtest.admission --sessions 3000 --concurrency 100,1000,3000

Starts Redis and one node on loopback, then for each concurrency opens `--sessions` sessions
(TCP, upgrade, auth, join, `room_joined`) with at most that many handshakes in flight, the
benchmark's raw client doing each, and prints sessions completed per second, handshake time
p50/p99, and how many upgrades the node refused with 503 (its `--handshake-backlog`) or that
failed otherwise. A concurrency as large as the sessions is a burst: every client at once, as
when the clients of a crashed node come back. Each session closes right after its
`room_joined`. Bounded: a handshake gives up after `--timeout` seconds, a run after the
sessions are done.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop

from gateway.cluster import Cluster
from loadtest import limits, procstats
from loadtest.rawclient import RawMember, connect_member
from loadtest.results import save


async def _session(url: str, name: str, room: str, timeout: float, times: list[float],
                   outcomes: Counter[str]) -> None:
    started = time.perf_counter()
    try:
        member = await connect_member(RawMember, url, name, room,
                                      lambda step, ns: None, timeout)
    except TimeoutError:
        outcomes["timed out"] += 1
        return
    except OSError as error:  # refused with a status, or no connection at all
        outcomes[_failure(error)] += 1
        return
    times.append(time.perf_counter() - started)
    outcomes["joined"] += 1
    member.close()


def _failure(error: OSError) -> str:
    """What kind of failure: the status a refused upgrade got, else the error's kind."""
    first = str(error).split("\r\n", 1)[0]
    if first.startswith("HTTP/1.1 "):
        return f"refused {first.split()[1]}"
    return f"failed ({type(error).__name__}: {first[:40]})"


async def _run(url: str, sessions: int, concurrency: int, timeout: float) -> dict[str, Any]:
    times: list[float] = []
    outcomes: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    run = secrets.token_hex(3)  # names of its own: a run's users are still leaving briefly

    async def bounded(n: int) -> None:
        async with gate:
            await _session(url, f"{run}-{n}", f"room{n % 50}", timeout, times, outcomes)

    started = time.perf_counter()
    await asyncio.gather(*(bounded(n) for n in range(sessions)))
    elapsed = time.perf_counter() - started
    times.sort()
    return {"concurrency": concurrency, "sessions": sessions, "seconds": round(elapsed, 2),
            "joined_per_s": round(outcomes["joined"] / elapsed),
            "p50_ms": round(1000 * times[len(times) // 2], 1) if times else None,
            "p99_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 1) if times else None,
            "outcomes": dict(outcomes)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.admission", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--concurrency", default="100,1000,3000",
                        help="handshakes in flight at most, comma-separated runs")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per handshake")
    parser.add_argument("--node-arg", action="append", default=[],
                        help="an extra `python -m node` flag (e.g. --handshake-backlog=200)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    procstats.raise_fd_limit()
    print(limits.describe(), *args.node_arg, flush=True)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="admission-")), 1, node_args=[
        *limits.node_flags(), "--log-level", "WARNING", *args.node_arg], temporary=True)
    results = []
    try:
        cluster.start()
        print(f"{'in flight':>9} {'sessions':>8} {'seconds':>8} {'joined/s':>9} {'p50 ms':>8} "
              f"{'p99 ms':>8}  outcomes", flush=True)
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            row = uvloop.run(_run(cluster.node_ws_url(1), args.sessions, concurrency,
                                  args.timeout))
            results.append(row)
            print(f"{row['concurrency']:>9} {row['sessions']:>8} {row['seconds']:>8} "
                  f"{row['joined_per_s']:>9} {row['p50_ms']!s:>8} {row['p99_ms']!s:>8}  "
                  f"{row['outcomes']}", flush=True)
    finally:
        cluster.stop()
    if args.json:
        save(args.json, "admission", "loadtest.admission", args, {"runs": results})


if __name__ == "__main__":
    main()
