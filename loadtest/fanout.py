"""Fan-out benchmark: how many deliveries per second the cluster sustains, and at what latency.

    python -m loadtest.fanout --nodes 2 --rooms 20 --members 20 --rates 5000,10000,20000

Starts its own cluster on loopback (Redis + nodes, nginx with --gateway), connects
rooms x members raw WebSocket clients from several generator processes (member i of a room
goes to node i % nodes, so every room spans every node), and steps the delivery rate up.
A step passes when >= 99.9 % of expected deliveries arrive and p99 < 200 ms. Prints per
step: target and achieved deliveries/s, loss, latency percentiles, CPU seconds of each node,
of Redis and of the generator, and peak RSS per node; `--json` writes the same.
Every loop is bounded: steps are fixed in number and length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from gateway.cluster import Cluster

PASS_RATIO = 0.999
PASS_P99_MS = 200.0
DRAIN_SECONDS = 2.0


@dataclass
class Plan:
    urls: list[str]
    rooms: list[str]
    members: int
    rates: list[float]  # deliveries/s over the whole benchmark, per step
    total_rooms: int
    step_seconds: float
    start_at: float = 0.0


@dataclass
class StepResult:
    sent: int = 0
    delivered: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def _latency_of(frame: str, now_ns: int) -> tuple[int, float] | None:
    """(step, ms) from a message frame, found without parsing the JSON."""
    at = frame.find('"text":"t')
    if at < 0:
        return None
    step, sent_ns = frame[at + 9:frame.index("|", at)].split(":")
    return int(step), (now_ns - int(sent_ns)) / 1e6


async def _client(http: aiohttp.ClientSession, url: str, name: str, room: str
                  ) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(url, compress=0, max_msg_size=0)
    await ws.send_str(json.dumps({"type": "auth", "name": name}))
    await ws.send_str(json.dumps({"type": "join", "room": room}))
    while (await ws.receive()).data.find('"room_joined"') < 0:
        pass
    return ws


async def _receive(ws: aiohttp.ClientWebSocketResponse, results: list[StepResult]) -> None:
    async for frame in ws:
        if frame.type is not aiohttp.WSMsgType.TEXT:
            break
        if frame.data.startswith('{"type":"ping"'):
            await ws.send_str(frame.data.replace('"ping"', '"pong"', 1))
            continue
        found = _latency_of(frame.data, time.time_ns())
        if found is not None and found[0] < len(results):
            results[found[0]].delivered += 1
            results[found[0]].latencies_ms.append(found[1])


async def _send(ws: aiohttp.ClientWebSocketResponse, plan: Plan, results: list[StepResult]
                ) -> None:
    for step, rate in enumerate(plan.rates):
        per_room = rate / plan.members / plan.total_rooms  # messages/s this sender sends
        begin = plan.start_at + step * plan.step_seconds
        count = int(per_room * plan.step_seconds)
        for n in range(count):
            delay = begin + n / per_room - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send_str(json.dumps(
                {"type": "message", "text": f"t{step}:{time.time_ns()}|{n}"}))
            results[step].sent += 1


async def _worker_main(plan: Plan, ready: Any, start: Any, out: Any) -> None:
    results = [StepResult() for _ in plan.rates]
    # limit=0: every WebSocket holds a connector slot, and aiohttp's default is 100 of them.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        clients = []
        for room in plan.rooms:
            members = [await _client(http, plan.urls[i % len(plan.urls)], f"{room}-{i}", room)
                       for i in range(plan.members)]
            clients.append(members)
        ready.set()
        plan.start_at = float(start.get(timeout=600))  # the start time, from the coordinator
        readers = [asyncio.create_task(_receive(ws, results)) for room in clients for ws in room]
        await asyncio.gather(*(_send(room[0], plan, results) for room in clients))
        await asyncio.sleep(DRAIN_SECONDS)
        for reader in readers:
            reader.cancel()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put((results, usage.ru_utime + usage.ru_stime))


def _worker(plan: Plan, ready: Any, start: Any, out: Any) -> None:
    uvloop.run(_worker_main(plan, ready, start, out))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    rates = [float(r) for r in args.rates.split(",")]
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="fanout-")), args.nodes, node_args=[
        "--rate", "100000", "--burst", "100000", "--log-level", "WARNING"])
    cluster.start()
    try:
        urls = [cluster.ws_url] if args.gateway else [
            cluster.node_ws_url(i) for i in range(1, args.nodes + 1)]
        rooms = [f"bench{r}" for r in range(args.rooms)]
        ctx = multiprocessing.get_context("spawn")
        workers = []
        for w in range(args.workers):
            plan = Plan(urls, rooms[w::args.workers], args.members, rates, args.rooms,
                        args.step_seconds)
            ready, start, out = ctx.Event(), ctx.Queue(), ctx.Queue()
            process = ctx.Process(target=_worker, args=(plan, ready, start, out))
            process.start()
            workers.append((process, ready, start, out))
        for process, ready, _, _ in workers:
            if not ready.wait(120):
                raise RuntimeError(f"generator {process.pid} did not connect its clients")
        pids = {f"node{i + 1}": n.process.pid for i, n in enumerate(cluster.nodes)}
        assert cluster.redis is not None
        pids["redis"] = cluster.redis.process.pid
        if cluster.nginx is not None and args.gateway:
            pids["nginx"] = cluster.nginx.process.pid
        start_at = time.time() + 1.0
        for _, _, start, _ in workers:
            start.put(start_at)
        marks = []
        for step in range(len(rates) + 1):
            time.sleep(max(0.0, start_at + step * args.step_seconds - time.time()))
            marks.append({name: _cpu_seconds(pid) for name, pid in pids.items()})
        outcomes = [out.get(timeout=args.step_seconds * len(rates) + 60)
                    for _, _, _, out in workers]
        for process, _, _, _ in workers:
            process.join(10)
        rss = {name: _peak_rss_kib(pid) for name, pid in pids.items() if name.startswith("node")}
    finally:
        cluster.stop()
    return _report(rates, args, outcomes, marks, rss)


def _report(rates, args, outcomes, marks, rss) -> list[dict[str, object]]:
    rows = []
    generator_cpu = sum(cpu for _, cpu in outcomes)
    for step, rate in enumerate(rates):
        sent = sum(results[step].sent for results, _ in outcomes)
        delivered = sum(results[step].delivered for results, _ in outcomes)
        latencies = [ms for results, _ in outcomes for ms in results[step].latencies_ms]
        expected = sent * args.members
        loss = 1 - delivered / expected if expected else 1.0
        p99 = _percentile(latencies, 0.99)
        rows.append({
            "target_per_s": rate,
            "achieved_per_s": round(delivered / args.step_seconds),
            "loss": round(loss, 5),
            "p50_ms": round(_percentile(latencies, 0.5), 2),
            "p90_ms": round(_percentile(latencies, 0.9), 2),
            "p99_ms": round(p99, 2),
            "max_ms": round(max(latencies, default=float("nan")), 2),
            "cpu_s": {name: round(marks[step + 1][name] - marks[step][name], 2)
                      for name in marks[step]},
            "passed": loss <= 1 - PASS_RATIO and p99 < PASS_P99_MS,
        })
    print(f"{'target/s':>9} {'achieved/s':>10} {'loss':>7} {'p50':>7} {'p90':>7} {'p99':>7} "
          f"{'max':>7}  cpu seconds per step")
    for row in rows:
        print(f"{row['target_per_s']:>9.0f} {row['achieved_per_s']:>10} {row['loss']:>7.2%} "
              f"{row['p50_ms']:>7} {row['p90_ms']:>7} {row['p99_ms']:>7} {row['max_ms']:>7}  "
              f"{row['cpu_s']} {'PASS' if row['passed'] else 'FAIL'}")
    print(f"generator CPU {generator_cpu:.1f} s in all; peak RSS KiB {rss}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--rates", default="5000,10000,20000,40000",
                        help="deliveries/s of each step, comma-separated")
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.add_argument("--gateway", action="store_true", help="connect through nginx")
    parser.add_argument("--json", type=Path, help="write the step results here")
    args = parser.parse_args()
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "steps": rows}, indent=2))


if __name__ == "__main__":
    main()
