"""Fan-out benchmark: how many deliveries per second the cluster sustains, and at what latency.

    .venv/bin/python -m loadtest.fanout --nodes 2 --rooms 20 --members 20 --json results/fanout.json
    .venv/bin/python -m loadtest.fanout --idle 5000 --json results/idle.json

Starts its own cluster on loopback (Redis, the nodes, nginx), connects rooms x members raw
WebSocket clients from several generator processes (member i of room r goes to node
(r + i) % nodes, so every room spans every node and every node holds its share of the members
whatever the room size; `--gateway` connects through nginx instead) and
steps the delivery rate up until a step fails. A step passes when >= 99.9 % of expected
deliveries arrive and p99 < 200 ms. Prints per step: target and achieved deliveries/s, loss,
latency percentiles, CPU seconds of each node, of Redis, of nginx and of the generator (a
saturated generator shows), the p99 inside each node read from its /metrics histograms
(publish: a message's handling to stored; fan-out: an envelope's arrival to written), and
peak RSS per node. `--idle N` instead holds N authenticated
connections (in rooms of `--members`) and prints the RSS each node grew by per connection.
`--json` writes the results for `python -m loadtest.capacity`.
Every loop is bounded: steps are fixed in number and length, waits have timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import random
import signal
import socket
import sys
from collections import Counter
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from gateway.cluster import Cluster
from gateway.processes import LOOPBACK, die_with_parent, free_port, wait_until
from gateway.tokens import new_hook_secret
from gateway.redis_cluster import MIN_SHARDS
from loadtest import canary as canary_process
from loadtest import limits, procstats, scrape
from loadtest.peers import PEER_SYSTEMS, PeerCluster
from loadtest.rawclient import (
    OnStamp, RawMember, connect_member, loopback_source, stamp_text,
)
from loadtest.results import save
from loadtest.stats import percentile

PASS_RATIO = 0.999
PASS_P99_MS = 200.0
DRAIN_SECONDS = 1.5
CONNECT_BATCH = 50
WAIT_TIMEOUT = 300.0
ANSWER_POLL = 0.5  # seconds between two looks at a generator that has not answered yet
SETTLE_SECONDS = 3.0
SPARE_FILES = 100  # a generator process's files besides its sockets
VISITORS = 20  # connections per generator that come and go between rooms (--churn)
CANARY_INTERVAL = 0.02  # seconds between the idle run's canary messages
CANARY_SOURCE = "127.0.0.1"  # the clients come from 127.0.0.2 on (rawclient.loopback_source)
DEFAULT_RATES = "10000,20000,40000,60000,80000,100000,120000,140000,160000,180000,200000"
CHAT = "chat"
M = TypeVar("M")  # a room's member: a client, or its index
SATURATED = 0.9  # of the box's CPU-seconds in a step: past it the box, not the nodes, is measured


@dataclass
class Topology:
    """What one generator process connects: its share of the rooms (by global index)."""

    system: str
    urls: list[str]
    rooms: list[int]
    members: int
    senders: int
    total_rooms: int
    spread: bool  # room r's senders start on node r % nodes (else on node1)
    churn: float = 0.0  # this generator's visitor joins per second during a step

    def senders_of(self, room: int, members: Sequence[M]) -> list[M]:
        """Member i of room r is on node (r + i) % nodes: spread senders start at member 0,
        which alternates nodes from room to room; concentrated ones at the member on node1."""
        first = 0 if self.spread else -room % len(self.urls)
        return [members[(first + k) % len(members)] for k in range(self.senders)]


def node_of(room: int, member: int, nodes: int) -> int:
    """The node (0-based) member `member` of room `room` connects to, without --gateway."""
    return (room + member) % nodes


@dataclass
class Step:
    index: int
    rate: float  # deliveries/s over the whole benchmark
    start_at: float
    seconds: float


@dataclass
class Tally:
    """One generator's view of one step."""

    sent: int = 0
    delivered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0


# --- the generator processes ----------------------------------------------------------------

def _member_kind(system: str) -> type[RawMember]:
    return RawMember if system == CHAT else PEER_SYSTEMS[system].member


async def _connect_room(topology: Topology, room: int, on_stamp: OnStamp) -> list[RawMember]:
    """The room's members, connected `CONNECT_BATCH` at a time (a room may have thousands)."""
    urls, kind, name = topology.urls, _member_kind(topology.system), f"bench{room}"
    members: list[RawMember] = []
    for first in range(0, topology.members, CONNECT_BATCH):
        members += await asyncio.gather(*(
            connect_member(kind, urls[node_of(room, i, len(urls))], f"{name}-m{i}", name, on_stamp,
                           WAIT_TIMEOUT, loopback_source(room * topology.members + i))
            for i in range(first, min(first + CONNECT_BATCH, topology.members))))
    return members


def _count(expected: float) -> int:
    """A whole number of events with `expected` as its mean: a sender of 0.25 messages/s
    sends one in a 5 s step, or two one time in four."""
    return int(expected) + (random.random() < expected - int(expected))


async def _on_schedule(per_second: float, step: Step, act: Callable[[int], None]) -> None:
    """`act(n)` at `per_second` for the step, on a fixed schedule (late ones catch up) that
    starts at a random phase: senders in step with each other would send in bursts."""
    phase = random.random() / per_second
    for n in range(_count(per_second * step.seconds)):
        delay = step.start_at + phase + n / per_second - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        act(n)


async def _send(member: RawMember, step: Step, per_second: float, tally: Tally) -> None:
    def say(n: int) -> None:
        member.say(stamp_text(step.index, time.time_ns(), n))
        tally.sent += 1

    await _on_schedule(per_second, step, say)


@dataclass
class Visitor:
    """A connection that goes back and forth between two rooms of its own (--churn): every
    join leaves the other room, so its node unsubscribes from one channel and subscribes to
    another."""

    name: str
    member: RawMember | None = None
    joins: int = 0

    @property
    def room(self) -> str:
        return f"{self.name}-r{self.joins % 2}"

    def move(self) -> None:
        assert self.member is not None
        self.joins += 1
        self.member.send(f'{{"type":"join","room":"{self.room}"}}')


async def _churn(visitors: list[Visitor], step: Step, per_second: float) -> None:
    await _on_schedule(per_second, step, lambda n: visitors[n % len(visitors)].move())


async def _run_step(senders: list[RawMember], visitors: list[Visitor],
                    topology: Topology, step: Step, tally: Tally) -> None:
    cpu_before = procstats.own_cpu_seconds()
    per_sender = step.rate / topology.members / topology.total_rooms / topology.senders
    churn = [_churn(visitors, step, topology.churn)] if visitors else []
    await asyncio.gather(*(_send(member, step, per_sender, tally) for member in senders),
                         *churn)
    await asyncio.sleep(max(0.0, step.start_at + step.seconds + DRAIN_SECONDS - time.time()))
    tally.cpu_s = procstats.own_cpu_seconds() - cpu_before


async def _generator_main(topology: Topology, control: Any, out: Any) -> None:
    procstats.raise_fd_limit()
    loop = asyncio.get_running_loop()
    tallies: dict[int, Tally] = {}

    def on_stamp(step: int, sent_ns: int) -> None:
        tally = tallies.get(step)
        if tally is not None:
            tally.delivered += 1
            tally.latencies_ms.append((time.time_ns() - sent_ns) / 1e6)

    rooms_per_batch = max(1, CONNECT_BATCH // topology.members)
    rooms: list[list[RawMember]] = []
    try:
        for batch in range(0, len(topology.rooms), rooms_per_batch):
            names = topology.rooms[batch:batch + rooms_per_batch]
            rooms += await asyncio.gather(*(_connect_room(topology, r, on_stamp) for r in names))
        visitors = await _visitors(topology) if topology.churn else []
    except (OSError, TimeoutError) as error:  # the coordinator says so and stops
        out.put(f"failed: {error!r}")
        return
    out.put("ready")
    senders = [member for index, room in zip(topology.rooms, rooms, strict=True)
               for member in topology.senders_of(index, room)]
    while (step := await loop.run_in_executor(None, control.get)) is not None:
        tally = tallies[step.index] = Tally()
        await _run_step(senders, visitors, topology, step, tally)
        del tallies[step.index]
        out.put(tally)
    for member in [*(member for room in rooms for member in room),
                   *(visitor.member for visitor in visitors if visitor.member)]:
        member.close()


async def _visitors(topology: Topology) -> list[Visitor]:
    """The generator's visitors, spread over the nodes, each in the first of its rooms."""
    visitors = [Visitor(f"visitor{topology.rooms[0]}-{k}") for k in range(VISITORS)]

    async def connect(k: int, visitor: Visitor) -> None:
        visitor.member = await connect_member(
            RawMember, topology.urls[k % len(topology.urls)], visitor.name, visitor.room,
            lambda step, sent_ns: None, WAIT_TIMEOUT, loopback_source(k))

    await asyncio.gather(*(connect(k, visitor) for k, visitor in enumerate(visitors)))
    return visitors


def _generator(topology: Topology, control: Any, out: Any) -> None:
    die_with_parent(signal.SIGKILL)  # a coordinator killed outright takes its generators along
    uvloop.run(_generator_main(topology, control, out))


# --- the coordinator ------------------------------------------------------------------------

@dataclass
class Generators:
    """The generator processes and their two queues each."""

    processes: list[Any] = field(default_factory=list)
    controls: list[Any] = field(default_factory=list)
    outs: list[Any] = field(default_factory=list)

    def start(self, topologies: list[Topology]) -> None:
        ctx = multiprocessing.get_context("spawn")
        for topology in topologies:
            control, out = ctx.Queue(), ctx.Queue()
            process = ctx.Process(target=_generator, args=(topology, control, out), daemon=True)
            process.start()
            self.processes.append(process)
            self.controls.append(control)
            self.outs.append(out)

    def tell(self, message: Step | None) -> None:
        for control in self.controls:
            control.put(message)

    def gather(self) -> list[Any]:
        """Every generator's next answer. One that died instead (its traceback is above
        this) ends the run at once, not after WAIT_TIMEOUT."""
        return [self._answer(index) for index in range(len(self.outs))]

    def _answer(self, index: int) -> Any:
        deadline = time.monotonic() + WAIT_TIMEOUT
        while True:
            try:
                return self.outs[index].get(timeout=ANSWER_POLL)
            except queue.Empty:
                process = self.processes[index]
                if not process.is_alive():
                    raise RuntimeError(f"generator {index + 1} exited (code "
                                       f"{process.exitcode}) without answering") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"generator {index + 1} did not answer in "
                                       f"{WAIT_TIMEOUT:g} s") from None

    def stop(self) -> None:
        self.tell(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def _percentile(ordered: list[float], q: float) -> float:
    value = percentile(ordered, q)
    return float("nan") if value is None else value


def _step_row(step: Step, tallies: list[Tally], members: int, cpu: dict[str, float]
              ) -> dict[str, Any]:
    sent = sum(t.sent for t in tallies)
    delivered = sum(t.delivered for t in tallies)
    latencies = sorted(ms for t in tallies for ms in t.latencies_ms)
    loss = 1 - delivered / (sent * members) if sent else 1.0
    p99 = _percentile(latencies, 0.99)
    return {
        "target_per_s": step.rate,
        "achieved_per_s": round(delivered / step.seconds),
        "delivered": delivered,
        "published_per_s": round(sent / step.seconds),
        "loss": round(loss, 5),
        "p50_ms": round(_percentile(latencies, 0.5), 2),
        "p90_ms": round(_percentile(latencies, 0.9), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(latencies[-1] if latencies else float("nan"), 2),
        "cpu_s": cpu | {"generator": round(sum(t.cpu_s for t in tallies), 2)},
        "passed": loss <= 1 - PASS_RATIO and p99 < PASS_P99_MS,
    }


def _print_row(row: dict[str, Any]) -> None:
    cpu = " ".join(f"{name} {seconds:.2f}" for name, seconds in row["cpu_s"].items())
    print(f"{row['target_per_s']:>9.0f} {row['achieved_per_s']:>10} {row['loss']:>7.2%} "
          f"{row['p50_ms']:>7} {row['p90_ms']:>7} {row['p99_ms']:>7} {row['max_ms']:>7}  "
          f"{'PASS' if row['passed'] else 'FAIL'}  {cpu}", flush=True)
    inside = "; ".join(
        f"{node} publish {_bound(p99['publish'])} fan-out {_bound(p99['fanout'])}"
        for node, p99 in row.get("node_p99_ms", {}).items())
    batching = ", ".join(f"{node} {per_write:.1f}"
                         for node, per_write in row.get("frames_per_write", {}).items()
                         if per_write is not None)
    if inside:
        print(f"{'':>9} inside the nodes, p99 at most (ms, /metrics buckets): {inside}"
              + (f"; frames per write {batching}" if batching else ""))


def _bound(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:g}"


def _watched(cluster: Cluster | PeerCluster, gateway: bool) -> dict[str, list[int]]:
    """The processes whose CPU each step reports, by name."""
    pids = {n.name: [n.process.pid] for n in cluster.nodes}
    assert cluster.nginx is not None
    if isinstance(cluster, Cluster) and cluster.redis_cluster is not None:
        redis = cluster.redis_cluster
        for node in redis.nodes:  # "redis:PORT" per primary, "replica:PORT" per replica
            role = "redis" if redis.role(node) == "master" else "replica"
            pids[f"{role}:{node.port}"] = [node.process.pid]
    else:
        assert cluster.redis is not None
        pids["redis"] = [cluster.redis.process.pid]
    if gateway:
        pids["nginx"] = procstats.family(cluster.nginx.process.pid)
    if isinstance(cluster, Cluster):
        pids |= {s.name: [s.process.pid] for s in cluster.children.services() if s.name == "hook"}
    return pids


def _latency_marks(cluster: Cluster | PeerCluster) -> dict[str, scrape.Marks]:
    """Each node's latency histograms and write counts (from its /metrics); none for a peer."""
    if not isinstance(cluster, Cluster):
        return {}
    return {node.name: scrape.marks(cluster.node_url(index))
            for index, node in enumerate(cluster.nodes, start=1)}


def _cpu_marks(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: procstats.cpu_seconds(group) for name, group in pids.items()}


def _box_warning(row: dict[str, Any], step: Step) -> str | None:
    """Said when the step used most of the machine: then the nodes share the cores with
    Redis and the generator, and the result measures the box, not the nodes. The CPU is read
    over the step and its drain, but the load ran for the step only: that is the time the
    cores were available to it."""
    available = (os.cpu_count() or 1) * step.seconds
    used = sum(row["cpu_s"].values())
    row["box_busy"] = round(used / available, 3)
    if used < SATURATED * available:
        return None
    return (f"{'':>9} warning: the box is saturated ({used:.1f} of {available:.1f} "
            "CPU-seconds): this step measures the machine, not the nodes")


def _steps(cluster: Cluster | PeerCluster, generators: Generators, args: argparse.Namespace
           ) -> dict[str, Any]:
    """Step the rate up until a step fails; one row per step run."""
    pids = _watched(cluster, args.gateway)
    rows = []
    print(f"{'target/s':>9} {'achieved/s':>10} {'loss':>7} {'p50':>7} {'p90':>7} {'p99':>7} "
          f"{'max':>7}  result  CPU seconds in the step ({args.step_seconds:g} s + drain)")
    for index, rate in enumerate(float(r) for r in args.rates.split(",")):
        step = Step(index, rate, time.time() + 0.5, args.step_seconds)
        generators.tell(step)
        time.sleep(max(0.0, step.start_at - time.time()))
        before, inside = _cpu_marks(pids), _latency_marks(cluster)
        tallies = generators.gather()
        after = _cpu_marks(pids)
        cpu = {name: round(after[name] - before[name], 2) for name in pids}
        rows.append(_step_row(step, tallies, args.members, cpu))
        latest = _latency_marks(cluster)
        rows[-1]["node_p99_ms"] = {
            node: scrape.p99_between(inside[node].histograms, marks.histograms)
            for node, marks in latest.items()}
        rows[-1]["frames_per_write"] = {
            node: scrape.frames_per_write(inside[node].counts, marks.counts)
            for node, marks in latest.items()}
        _print_row(rows[-1])
        if (warning := _box_warning(rows[-1], step)) is not None:
            print(warning, flush=True)
        if not rows[-1]["passed"]:
            break
    rss = {n.name: procstats.memory_kib(n.process.pid, "VmHWM") for n in cluster.nodes}
    passed = [row["achieved_per_s"] for row in rows if row["passed"]]
    print(f"max passing: {max(passed, default=0)} deliveries/s; peak RSS KiB {rss}")
    return {"steps": rows, "peak_rss_kib": rss, "max_passing_per_s": max(passed, default=0),
            "placement": None if args.gateway else _placement(args),
            "rooms_per_node": _per_node(cluster, "chat_rooms_local"),
            "joins_per_node": _per_node(cluster, "chat_room_joins")}


def _per_node(cluster: Cluster | PeerCluster, metric: str) -> list[int] | None:
    """A figure of each node's /metrics: its subscribed rooms (rooms with a local member),
    the room joins it accepted."""
    if not isinstance(cluster, Cluster):
        return None
    return [int(scrape.gauge(cluster.node_url(i), metric) or 0)
            for i in range(1, len(cluster.nodes) + 1)]


def _placement(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Each node's share of the members and of the senders."""
    topology = Topology(args.system, [""] * args.nodes, [], args.members, args.senders,
                        args.rooms, args.spread)
    members = list(range(args.members))
    placed = [node_of(room, i, args.nodes) for room in range(args.rooms) for i in members]
    senders = [node_of(room, i, args.nodes) for room in range(args.rooms)
               for i in topology.senders_of(room, members)]
    return {f"node{n + 1}": {"members": placed.count(n) / len(placed),
                             "senders": senders.count(n) / len(senders)}
            for n in range(args.nodes)}


def _connections(cluster: Cluster, index: int) -> int:
    """The node's own count of its WebSocket sessions."""
    with urllib.request.urlopen(f"{cluster.node_url(index)}/api/status", timeout=5) as reply:
        return int(json.load(reply)["connections"])


def _idle(cluster: Cluster, before: dict[str, int], args: argparse.Namespace
          ) -> dict[str, Any]:
    """What the idle connections cost once settled: memory, CPU (the heartbeat is the idle
    work), and the latency of a client chatting beside them."""
    time.sleep(SETTLE_SECONDS)
    nodes = _idle_memory(cluster, before)
    cpu = _idle_cpu(cluster, args)
    for name, share in cpu.items():
        if name in nodes:
            nodes[name]["idle_cpu_percent"] = share
    return {"nodes": nodes, "cpu_percent": cpu, "canary": _idle_canary(cluster, args)}


def _idle_memory(cluster: Cluster, before: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Each node's connections and RSS growth per connection."""
    nodes = {}
    for index, node in enumerate(cluster.nodes, start=1):
        after = procstats.memory_kib(node.process.pid, "VmRSS")
        count = _connections(cluster, index)
        nodes[node.name] = {"connections": count, "rss_before_kib": before[node.name],
                            "rss_after_kib": after,
                            "kib_per_connection": round((after - before[node.name]) / count, 2)}
        print(f"{node.name}: {count} connections, RSS {before[node.name]} -> {after} KiB, "
              f"{nodes[node.name]['kib_per_connection']} KiB per connection", flush=True)
    return nodes


def _idle_cpu(cluster: Cluster, args: argparse.Namespace) -> dict[str, float]:
    """Percent of a core each node (and nginx through the gateway) used over
    `--idle-seconds`, with nothing but the idle connections on the cluster."""
    pids = {name: group for name, group in _watched(cluster, args.gateway).items()
            if not name.startswith(("redis", "replica"))}
    started, before = time.monotonic(), _cpu_marks(pids)
    time.sleep(args.idle_seconds)
    seconds = time.monotonic() - started
    cpu = {name: round(100 * (used - before[name]) / seconds, 2)
           for name, used in _cpu_marks(pids).items()}
    print(f"CPU over {seconds:.0f} s, % of a core: "
          + ", ".join(f"{name} {share}" for name, share in cpu.items()), flush=True)
    return cpu


def _idle_canary(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """The round trips of a canary chatting on node1 (or the gateway) for `--idle-seconds`:
    what the idle crowd's heartbeat costs a client that talks."""
    url = cluster.ws_url if args.gateway else cluster.node_ws_url(1)
    canary = canary_process.start(url, args.idle_seconds, CANARY_INTERVAL, CANARY_SOURCE)
    report = canary_process.result(canary, args.idle_seconds + 60)
    print(f"then a canary beside them for {args.idle_seconds:g} s (a message every "
          f"{CANARY_INTERVAL * 1000:g} ms): p99 {report['p99_ms']} ms, max {report['max_ms']} "
          f"ms, {report['received']}/{report['sent']} back, problems {report['problems']}",
          flush=True)
    return report


def _topologies(cluster: Cluster | PeerCluster, args: argparse.Namespace, rooms: int
                ) -> list[Topology]:
    urls = [cluster.ws_url] if args.gateway else [
        cluster.node_ws_url(i) for i in range(1, args.nodes + 1)]
    return [Topology(args.system, urls, list(range(rooms))[w::args.workers], args.members,
                     args.senders, rooms, args.spread, args.churn / args.workers)
            for w in range(args.workers)]


def _cluster(args: argparse.Namespace, connections: int) -> Cluster | PeerCluster:
    run_dir = Path(tempfile.mkdtemp(prefix="fanout-"))
    if args.system == CHAT:
        print(limits.describe(), flush=True)
        if args.gateway:
            print(f"the gateway's too: {limits.GATEWAY_LIMITS}", flush=True)
        hook = _publish_hook(args)
        return Cluster(run_dir, args.nodes, node_args=[*limits.node_flags(),
                                                       "--log-level", "WARNING", *hook],
                       node_env={"CHAT_HOOK_SECRET": new_hook_secret()} if hook else {},
                       redis_shards=args.shards if args.redis_cluster else 0,
                       gateway_limits={**limits.GATEWAY_LIMITS,
                                       "websockets": connections + VISITORS * args.workers},
                       temporary=True)
    return PeerCluster(run_dir, PEER_SYSTEMS[args.system], args.nodes, temporary=True)


def _publish_hook(args: argparse.Namespace) -> list[str]:
    """The nodes' flags for `--publish-hook-ms` (its backend starts with the cluster:
    `_start_hook_backend`); none without it."""
    if args.publish_hook_ms is None:
        return []
    args.hook_port = free_port()
    return ["--publish-hook", f"http://{LOOPBACK}:{args.hook_port}/publish",
            "--publish-hook-concurrency", "1024"]


def _start_hook_backend(cluster: Cluster, args: argparse.Namespace) -> None:
    """The hook's backend, one of the cluster's processes (stopped with it); its CPU is
    reported as `hook`."""
    service = cluster.children.spawn(
        "hook", [sys.executable, "-m", "loadtest.hook_backend", "--port", str(args.hook_port),
                 "--delay-ms", str(args.publish_hook_ms)],
        args.hook_port, cluster.run_dir / "hook.log")
    wait_until(service, lambda: _listening(args.hook_port))


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=1).close()
        return True
    except OSError:
        return False


def _enough_workers(args: argparse.Namespace, rooms: int, files: int) -> int:
    """`--workers`, or more if one generator process could not open its share of sockets."""
    needed = -(-rooms * args.members // (files - SPARE_FILES))
    if needed > args.workers:
        print(f"{needed} generator processes: one may open {files} files", flush=True)
    return max(args.workers, needed)


def check_files(args: argparse.Namespace, rooms: int, files: int) -> None:
    """Refuse a run that a node could not hold under this machine's open-files limit,
    rather than fail halfway with EMFILE (nginx starts as many workers as the run needs)."""
    if args.gateway:  # nginx balances the connections over the nodes
        per_node = -(-rooms * args.members // args.nodes)
    else:  # member i of room r is on node (r + i) % nodes
        per_node = max(Counter(node_of(room, i, args.nodes) for room in range(rooms)
                               for i in range(args.members)).values())
    if per_node > files - SPARE_FILES:
        raise SystemExit(
            f"{rooms * args.members} connections need {per_node} sockets a node, but a "
            f"process may open {files} files here (`ulimit -Hn`): fewer connections, more "
            "nodes, or a higher hard limit")


def run(args: argparse.Namespace) -> dict[str, Any]:
    files = procstats.raise_fd_limit()  # the nodes inherit it
    rooms = -(-args.idle // args.members) if args.idle else args.rooms
    check_files(args, rooms, files)
    args.workers = _enough_workers(args, rooms, files)
    cluster = _cluster(args, rooms * args.members)
    generators = Generators()
    try:
        cluster.start()
        if args.system == CHAT and args.publish_hook_ms is not None:
            assert isinstance(cluster, Cluster)
            _start_hook_backend(cluster, args)
        rss_before = {n.name: procstats.memory_kib(n.process.pid, "VmRSS")
                      for n in cluster.nodes}
        filling = time.monotonic()
        generators.start(_topologies(cluster, args, rooms))
        if (answers := generators.gather()) != ["ready"] * args.workers:
            raise RuntimeError(f"a generator did not connect its clients: {answers}")
        fill = round(time.monotonic() - filling, 2)
        print(f"{rooms * args.members} clients connected and joined in {fill} s "
              f"({rooms * args.members / fill:,.0f} a second)", flush=True)
        if args.idle:
            assert isinstance(cluster, Cluster), "--idle measures the chat nodes"
            return _idle(cluster, rss_before, args) | {"fill_seconds": fill}
        return _steps(cluster, generators, args) | {"fill_seconds": fill}
    finally:
        generators.stop()
        cluster.stop()


def _shapes(text: str | None, args: argparse.Namespace) -> list[tuple[int, int]]:
    """(members, rooms) of each room shape: `--shapes 2x1000,2000x1`, else --members x --rooms."""
    if not text:
        return [(args.members, args.rooms)]
    return [(int(size), int(count)) for size, count in
            (shape.lower().split("x") for shape in text.split(","))]


def _runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run the arguments ask for, in order: each room shape, each system (alternating,
    round after round, with --compare) and each sender placement."""
    systems = [args.system, args.compare] if args.compare else [args.system]
    placements = {"spread": [True], "concentrated": [False], "both": [True, False]}
    results = []
    for members, rooms in _shapes(args.shapes, args):
        for round_ in range(args.rounds):
            for spread in placements[args.placement]:
                for system in systems:
                    this = argparse.Namespace(**{**vars(args), "system": system, "spread": spread,
                                                 "members": members, "rooms": rooms})
                    where = "senders spread over the nodes" if spread else "senders on node1"
                    churn = f", {args.churn:g} visitor joins/s" if args.churn else ""
                    print(f"\n== {system}, {rooms} rooms of {members}, {where}, "
                          f"{'through nginx' if args.gateway else 'direct'}{churn}, "
                          f"round {round_ + 1}", flush=True)
                    results.append({"system": system, "spread": spread, "round": round_ + 1,
                                    "shape": {"members": members, "rooms": rooms}} | run(this))
    if args.shapes:
        _shape_summary(results)
    return results


def _shape_summary(results: list[dict[str, Any]]) -> None:
    """Per room shape: the max passing rate, and node CPU per delivery and p99 at the top
    rate that every shape passed (cost per delivery should not grow with room size)."""
    common = set.intersection(*({row["target_per_s"] for row in run_["steps"] if row["passed"]}
                                for run_ in results)) or {0.0}
    rate = max(common)
    print(f"\nroom shapes at {rate:,.0f} deliveries/s (the top rate all passed):")
    print(f"{'members':>8} {'rooms':>6} {'max passing':>11} {'node µs/delivery':>16} "
          f"{'p99 ms':>7} {'Redis CPU s':>11} {'rooms per node':>14}")
    for run_ in results:
        row = next((r for r in run_["steps"] if r["target_per_s"] == rate), None)
        shape = run_["shape"]
        cost, p99, redis = ((f"{_node_us_per_delivery(row):.1f}", row["p99_ms"],
                             round(redis_cpu(row["cpu_s"]), 2)) if row else ("-", "-", "-"))
        print(f"{shape['members']:>8} {shape['rooms']:>6} {run_['max_passing_per_s']:>11,} "
              f"{cost:>16} {p99!s:>7} {redis!s:>11} {run_.get('rooms_per_node', '-')!s:>14}")


def redis_cpu(cpu_s: dict[str, float], role: str = "redis") -> float:
    """CPU seconds of the Redis primaries in a step (one Redis, or every shard's primary),
    or with role "replica" of the Redis Cluster's replicas."""
    return sum(s for name, s in cpu_s.items() if name == role or name.startswith(f"{role}:"))


def _node_us_per_delivery(row: dict[str, Any]) -> float:
    """CPU the nodes spent per delivery in a step, in microseconds."""
    node_cpu = sum(s for name, s in row["cpu_s"].items() if name.startswith("node"))
    return 1e6 * node_cpu / row["delivered"] if row["delivered"] else float("nan")


def _compare(results: list[dict[str, Any]], ours: str, peer: str) -> dict[str, Any]:
    """Ratios of ours to the peer's, per sender placement: best max passing rate, and node
    CPU per delivery at each rate both passed (median over rounds)."""
    summary: dict[str, Any] = {}
    for spread in sorted({r["spread"] for r in results}, reverse=True):
        runs = {system: [r for r in results if r["system"] == system and r["spread"] == spread]
                for system in (ours, peer)}
        best = {system: max(r["max_passing_per_s"] for r in runs[system]) for system in runs}
        cost = {system: _cost_by_rate(runs[system]) for system in runs}
        common = sorted(set(cost[ours]) & set(cost[peer]))
        where = "spread" if spread else "concentrated"
        by_round = ratios_by_round(runs[ours], runs[peer])
        summary[where] = {
            "max_passing": best,
            "max_passing_ratio": round(best[ours] / best[peer], 2) if best[peer] else None,
            "node_us_per_delivery": {rate: {s: cost[s][rate] for s in runs} for rate in common},
            "node_us_ratio_by_round": by_round,
        }
        print(f"\n{where}: max passing {ours} {best[ours]:,} vs {peer} {best[peer]:,} "
              f"= {summary[where]['max_passing_ratio']}x")
        for rate in common:
            ratio = cost[ours][rate] / cost[peer][rate]
            rounds = ", ".join(f"{r:.2f}" for r in by_round.get(rate, []))
            print(f"  at {rate:>9,.0f}/s node CPU per delivery: {ours} {cost[ours][rate]:.1f} µs, "
                  f"{peer} {cost[peer][rate]:.1f} µs = {ratio:.2f}x (each round: {rounds})")
    return summary


def ratios_by_round(ours: list[dict[str, Any]], peer: list[dict[str, Any]]
                    ) -> dict[float, list[float]]:
    """Ours ÷ the peer's node CPU per delivery at each rate, one ratio per round: the two
    runs of a round ran back to back, so the box drifts less within a round than between
    rounds (a rate counts in the rounds where both passed it)."""
    ratios: dict[float, list[float]] = {}
    peers = {run_["round"]: _costs(run_) for run_ in peer}
    for run_ in ours:
        theirs = peers.get(run_["round"], {})
        for rate, cost in _costs(run_).items():
            if rate in theirs:
                ratios.setdefault(rate, []).append(round(cost / theirs[rate], 2))
    return ratios


def _costs(run_: dict[str, Any]) -> dict[float, float]:
    """Node µs per delivery at each rate the run passed."""
    return {row["target_per_s"]: _node_us_per_delivery(row)
            for row in run_["steps"] if row["passed"]}


def _cost_by_rate(runs: list[dict[str, Any]]) -> dict[float, float]:
    """Median node µs per delivery at each target rate passed in every one of `runs`."""
    by_rate: dict[float, list[float]] = {}
    for run_ in runs:
        for rate, cost in _costs(run_).items():
            by_rate.setdefault(rate, []).append(cost)
    return {rate: round(sorted(costs)[len(costs) // 2], 2) for rate, costs in by_rate.items()
            if len(costs) == len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default=CHAT, choices=[CHAT, *PEER_SYSTEMS],
                        help="what to run: the chat cluster (default) or a Socket.IO peer")
    parser.add_argument("--compare", choices=list(PEER_SYSTEMS),
                        help="run --system and this peer back to back, alternating, and print "
                             "the ratios of max passing rate and node CPU per delivery")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each system")
    parser.add_argument("--placement", default="both", choices=["spread", "concentrated", "both"],
                        help="senders spread over the nodes (room r's on node r %% nodes), "
                             "concentrated on node1, or both runs (default)")
    parser.add_argument("--shapes", metavar="SIZExCOUNT,...",
                        help="room shapes, one run each: e.g. 2x1000,20x100,200x10,2000x1 "
                             "(members x rooms; default --members x --rooms)")
    parser.add_argument("--redis-cluster", action="store_true",
                        help="run the chat nodes on a Redis Cluster (--shards primaries with a "
                             "replica each) instead of one Redis; CPU is reported per process")
    parser.add_argument("--shards", type=int, default=MIN_SHARDS,
                        help=f"Redis Cluster primaries (at least {MIN_SHARDS})")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--members", type=int, default=20, help="members per room")
    parser.add_argument("--senders", type=int, default=1,
                        help="members of each room that send (member i of room r is on node "
                             "(r + i) %% nodes)")
    parser.add_argument("--rates", default=DEFAULT_RATES,
                        help="deliveries/s of each step, comma-separated; stops at a failure")
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.add_argument("--gateway", action="store_true", help="connect through nginx")
    parser.add_argument("--churn", type=float, default=0.0, metavar="JOINS_PER_S",
                        help="during each step, visitors (20 a generator) join rooms at this "
                             "rate in all, each join leaving the visitor's other room: "
                             "subscribe, unsubscribe and presence churn")
    parser.add_argument("--idle", type=int, nargs="?", const=5000, default=0, metavar="N",
                        help="hold N idle authenticated connections (default 5000) and "
                             "measure memory per connection instead")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="how long --idle measures CPU: at least the nodes' ping interval")
    parser.add_argument("--publish-hook-ms", type=float, metavar="MS",
                        help="the chat nodes ask a publish hook about every message; its "
                             "backend (loadtest.hook_backend, CPU shown as `hook`) answers "
                             "accept after MS ms")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.shards < MIN_SHARDS:
        parser.error(f"--shards must be at least {MIN_SHARDS}")
    if args.churn and (args.system != CHAT or args.compare or args.idle):
        parser.error("--churn runs the chat cluster's steps (its visitors speak our protocol)")
    if args.idle:
        args.placement, args.spread = "spread", True
        results: dict[str, Any] = run(args)
    else:
        runs = _runs(args)
        results = {"runs": runs} | (
            {"comparison": _compare(runs, args.system, args.compare)} if args.compare else {})
    if args.json:
        save(args.json, "idle" if args.idle else "fanout", "loadtest.fanout", args,
             {"node_limits": limits.BENCHMARK_LIMITS, "gateway_limits": limits.GATEWAY_LIMITS}
             | results)


if __name__ == "__main__":
    main()
