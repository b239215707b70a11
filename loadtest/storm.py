"""A reconnect storm: one node of a loaded cluster killed with SIGKILL, and its clients coming
back on the others.

    .venv/bin/python -m loadtest.storm --clients 4000 --rooms 200 --rate 100

Starts Redis, `--nodes` nodes (admission at its default backlog) and nginx, then `--clients`
raw-socket clients (loadtest/rawsession.py: the client library's resume rules — backoff
with full jitter, `Retry-After` after a refused upgrade, the same identity, `since`/`epoch`,
a message not seen stored sent again with its `clientId` — at a small share of the
generator's core) in `--rooms` rooms through the gateway, from many loopback source
addresses, spread over `--workers` processes, and `--observer-rooms` of them in a process of
their own. One client per room sends, at `--rate` messages/s in all, each stamped with its
send time. After `--settle` seconds node1 is killed with SIGKILL. Printed: how long until the
last of node1's clients had resumed (its `room_joined` after the kill), how many resumed
with `recovered` true or false, how many each other node took and how fast (full sessions in
its busiest second), the delivery p99 of the other nodes' clients (in rooms whose sender
stayed) before and during the storm, in the observer's rooms (the cluster's latency) and in
all rooms (with the workers' own loop delay), whether every client got every seq of its
room after its first `room_joined` once, in order, up to the newest its sender saw stored,
the generator's CPU during the storm, and the survivors' longest full garbage collection.
Bounded: the storm is given up after `--deadline` seconds; every process stops on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvloop

from gateway.cluster import Cluster
from gateway.processes import die_with_parent
from loadtest import limits, procstats, scrape
from loadtest.rawclient import loopback_source
from loadtest.rawsession import RawSession
from loadtest.results import save
from loadtest.stats import percentile
from node.heap import HEAP

STARTING = 500  # clients a worker has joining at once
JOIN_TIMEOUT = 60.0  # seconds a client may take to join before the run is given up


class Worker:
    """The clients of some rooms, their senders, and what they saw."""

    def __init__(self, url: str, rooms: list[str], per_room: int, interval: float,
                 first: int) -> None:
        self.members = {room: [RawSession(url, f"{room}-{i}", room,
                                          loopback_source(first + r * per_room + i))
                               for i in range(per_room)] for r, room in enumerate(rooms)}
        self.interval = interval
        self.skipped = 0
        self.killed_at: float | None = None
        self.node_at_kill: dict[RawSession, str | None] = {}
        self.cpu_at_kill = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []  # the members' connection loops
        self._senders: list[asyncio.Task[None]] = []

    @property
    def everyone(self) -> list[RawSession]:
        return [m for members in self.members.values() for m in members]

    async def start(self) -> None:
        """Every member joined, `STARTING` at a time; then the senders."""
        everyone = self.everyone
        for at in range(0, len(everyone), STARTING):
            batch = everyone[at:at + STARTING]
            self._tasks += [asyncio.create_task(member.run()) for member in batch]
            async with asyncio.timeout(JOIN_TIMEOUT):
                await asyncio.gather(*(member.joined.wait() for member in batch))
        self._senders = [asyncio.create_task(self._send(members[0]))
                         for members in self.members.values()]

    def kill_came(self, at: float) -> None:
        self.killed_at = at
        self.cpu_at_kill = procstats.own_cpu_seconds()
        for member in self.everyone:
            member.resume_after = at
            self.node_at_kill[member] = member.seen.node

    async def _send(self, sender: RawSession) -> None:
        while not self._stop.is_set():
            if not sender.say():
                self.skipped += 1  # not joined, or its last message not stored yet
            await asyncio.sleep(self.interval)

    async def finish(self, drain: float) -> dict[str, Any]:
        """Stop sending, give deliveries `drain` seconds, and report."""
        self._stop.set()
        await asyncio.gather(*self._senders)
        cpu = procstats.own_cpu_seconds() - self.cpu_at_kill
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and not self._delivered():
            await asyncio.sleep(0.1)
        report = self._report(cpu)
        for member in self.everyone:
            member.stop()
        await asyncio.gather(*self._tasks)
        return report

    def _newest(self, room: str) -> int:
        """The newest seq the room's sender saw stored (0 for none)."""
        return max(self.members[room][0].accepted, default=0)

    def _delivered(self) -> bool:
        return all(m.seen.last_seq >= self._newest(room)
                   for room, members in self.members.items() for m in members)

    def _report(self, cpu: float) -> dict[str, Any]:
        wrong = sum(1 for room, members in self.members.items() for m in members
                    if m.seen.duplicates or m.seen.gaps or m.seen.last_seq < self._newest(room))
        moved = [m for m in self.everyone if self.node_at_kill[m] == "node1"]
        # Latency as the survivors' clients see it: rooms whose sender stayed too (a moved
        # sender's messages wait for its own resume, which is the storm's time, not theirs).
        stayed = [m for members in self.members.values()
                  if self.node_at_kill[members[0]] != "node1"
                  for m in members if self.node_at_kill[m] not in (None, "node1")]
        return {
            "accepted": sum(len(members[0].accepted) for members in self.members.values()),
            "skipped": self.skipped,
            "clients_wrong": wrong,
            "moved": len(moved),
            "resumed": [(m.seen.resumed_at, m.seen.node) for m in moved],
            "recovered": [m.seen.recovered for m in moved],
            "stayed_latencies": [lat for m in stayed for lat in m.seen.latencies],
            "cpu_seconds_after_kill": round(cpu, 2),
        }


def _work(conn: Connection, url: str, rooms: list[str], per_room: int, interval: float,
          drain: float, first: int) -> None:
    die_with_parent()
    procstats.raise_fd_limit()
    HEAP.install()  # thousands of clients each: no full collection pauses the receivers
    uvloop.install()

    async def main() -> None:
        worker = Worker(url, rooms, per_room, interval, first)
        try:
            await worker.start()
        except TimeoutError:
            conn.send(f"its {len(worker.everyone)} clients did not all join within "
                      f"{JOIN_TIMEOUT:g} s")
            return
        conn.send("ready")
        loop = asyncio.get_running_loop()
        worker.kill_came(await loop.run_in_executor(None, conn.recv))
        await loop.run_in_executor(None, conn.recv)  # "finish"
        conn.send(await worker.finish(drain))

    asyncio.run(main())


def _answer(conn: Connection, timeout: float) -> Any:
    """What a client process sends next ("ready", why it could not be, its report), or, as
    a string, why nothing came: silence or its exit."""
    try:
        return conn.recv() if conn.poll(timeout) else f"nothing in {timeout:g} s"
    except EOFError:
        return "it exited (its traceback is above)"


def _p99(values: list[float]) -> float | None:
    value = percentile(sorted(values), 0.99)
    return None if value is None else round(value, 1)


def _before_and_during(latencies: list[tuple[float, float]], killed_at: float
                       ) -> tuple[float | None, float | None]:
    """The p99 of the deliveries received before the kill and of those received after it."""
    return (_p99([ms for at, ms in latencies if at < killed_at]),
            _p99([ms for at, ms in latencies if at >= killed_at]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    procstats.raise_fd_limit()
    flags = [*limits.node_flags({k: v for k, v in limits.BENCHMARK_LIMITS.items()
                                 if k != "handshake_backlog"}), "--log-level", "WARNING",
             *args.node_arg]
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="storm-")), args.nodes, node_args=flags,
                      gateway_limits={**limits.GATEWAY_LIMITS, "websockets": args.clients},
                      temporary=True)
    workers: list[tuple[multiprocessing.Process, Connection]] = []
    try:
        cluster.start()
        per_room = args.clients // args.rooms
        rooms = [f"storm{r}" for r in range(args.rooms)]
        interval = args.rooms / args.rate  # each room's sender
        # The observer's few rooms get a process of their own: its loop is not busy with the
        # storm's reconnects, so its latency is the cluster's (the clients of a deployment
        # have their own machines), as far as two shared cores allow.
        shares = [rooms[:args.observer_rooms]] + [
            rooms[args.observer_rooms:][w::args.workers] for w in range(args.workers)]
        first = 0
        for share in shares:
            parent, child = multiprocessing.Pipe()
            process = multiprocessing.Process(
                target=_work, args=(child, cluster.ws_url, share, per_room, interval,
                                    args.drain, first), daemon=True)
            first += len(share) * per_room
            process.start()
            workers.append((process, parent))
        for _, conn in workers:
            if (answer := _answer(conn, args.deadline)) != "ready":
                raise SystemExit(f"a client process could not start: {answer} (fewer "
                                 "--clients, or more --workers)")
        print(f"{per_room * args.rooms} clients in {args.rooms} rooms, "
              f"{args.rate:g} messages/s; killing node1 in {args.settle:g} s", flush=True)
        time.sleep(args.settle)
        killed_at = time.time()
        cluster.nodes[0].kill()
        for _, conn in workers:
            conn.send(killed_at)
        time.sleep(args.storm)
        for _, conn in workers:
            conn.send("finish")
        reports = [_answer(conn, args.deadline) for _, conn in workers]
        if missing := [report for report in reports if isinstance(report, str)]:
            raise SystemExit(f"a client process did not report: {missing[0]}")
        survivors = [cluster.node_url(index) for index in range(2, args.nodes + 1)]
        shed = sum(scrape.gauge(url, "chat_upgrades_shed") or 0 for url in survivors)
        pause = max(scrape.gauge(url, "chat_gc_longest_full_seconds") or 0 for url in survivors)
        return _summary(reports, killed_at, int(shed), pause, args)
    finally:
        for process, _ in workers:
            process.kill()
            process.join()
        cluster.stop()


def _admission(resumed: list[tuple[float, str]], killed_at: float) -> dict[str, Any]:
    """Per node: how many of the moved clients it took, and its full sessions a second over
    the busiest second and over its whole share."""
    per_node: dict[str, list[float]] = {}
    for at, node in resumed:
        per_node.setdefault(node, []).append(at - killed_at)
    admission = {}
    for node, times in sorted(per_node.items()):
        times.sort()
        busiest = max(Counter(int(t) for t in times).values())
        span = times[-1] - times[0]
        admission[node] = {"sessions": len(times), "peak_per_s": busiest,
                           "mean_per_s": round(len(times) / span) if span > 0 else None}
    return admission


def _worst_second(latencies: list[tuple[float, float]], killed_at: float
                  ) -> dict[str, Any] | None:
    """The whole second after the kill whose deliveries had the highest p99: when the storm
    hurt most (a stall at a given moment, such as a node's time to live, shows there)."""
    by_second: dict[int, list[float]] = {}
    for at, ms in latencies:
        if at >= killed_at:
            by_second.setdefault(int(at - killed_at), []).append(ms)
    if not by_second:
        return None
    second, worst = max(by_second.items(), key=lambda item: _p99(item[1]) or 0.0)
    return {"after_kill_s": second, "p99_ms": _p99(worst), "deliveries": len(worst)}


def _summary(reports: list[dict[str, Any]], killed_at: float, shed: int, pause: float,
             args: argparse.Namespace) -> dict[str, Any]:
    resumed = [(at, node) for r in reports for at, node in r["resumed"] if at is not None]
    recovered = [v for r in reports for v in r["recovered"]]
    observed = _before_and_during(reports[0]["stayed_latencies"], killed_at)  # 0: observer
    everyone = _before_and_during([lat for r in reports for lat in r["stayed_latencies"]],
                                  killed_at)
    moved = sum(r["moved"] for r in reports)
    generator_cpu = sum(r["cpu_seconds_after_kill"] for r in reports)
    summary = {
        "clients": args.clients // args.rooms * args.rooms,
        "moved": moved,
        "resumed": len(resumed),
        "last_resumed_s": round(max(at for at, _ in resumed) - killed_at, 2) if resumed else None,
        "recovered_true": recovered.count(True),
        "recovered_false": recovered.count(False),
        "admission": _admission(resumed, killed_at),
        "upgrades_shed": shed,
        "survivors_longest_gc_ms": round(1000 * pause, 1),
        "accepted": sum(r["accepted"] for r in reports),
        "skipped": sum(r["skipped"] for r in reports),
        "clients_missing_or_misordered": sum(r["clients_wrong"] for r in reports),
        "observer_p99_ms_before": observed[0],
        "observer_p99_ms_during": observed[1],
        "observer_worst_second": _worst_second(reports[0]["stayed_latencies"], killed_at),
        "stayed_p99_ms_before": everyone[0],
        "stayed_p99_ms_during": everyone[1],
        "generator_cpu_seconds_during": round(generator_cpu, 2),
    }
    print(f"node1 held {moved} clients; {len(resumed)} resumed on the others, the last "
          f"{summary['last_resumed_s']} s after the kill ({summary['recovered_true']} "
          f"recovered, {summary['recovered_false']} not); the others answered {shed} "
          f"upgrades 503 meanwhile; their longest full garbage collection "
          f"{summary['survivors_longest_gc_ms']} ms")
    for node, taken in summary["admission"].items():
        print(f"  {node} took {taken['sessions']}: {taken['peak_per_s']} full sessions in its "
              f"busiest second, {taken['mean_per_s']}/s over its share")
    print(f"the other nodes' clients: delivery p99 {summary['observer_p99_ms_before']} ms "
          f"before, {summary['observer_p99_ms_during']} ms during the storm in the observer's "
          f"{args.observer_rooms} rooms (a process of their own); "
          f"{summary['stayed_p99_ms_before']} ms / {summary['stayed_p99_ms_during']} ms in all "
          "rooms (their processes busy with the storm)")
    if (worst := summary["observer_worst_second"]) is not None:
        print(f"  the observer's worst second: {worst['after_kill_s']}-"
              f"{worst['after_kill_s'] + 1} s after the kill, p99 {worst['p99_ms']} ms over "
              f"{worst['deliveries']} deliveries")
    print(f"{summary['accepted']} messages accepted ({summary['skipped']} sends skipped while "
          f"the sender was away); clients missing one or out of order: "
          f"{summary['clients_missing_or_misordered']}; the generator's CPU from the kill to "
          f"the end of sending: {summary['generator_cpu_seconds_during']} s", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.storm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4000)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s in all")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--observer-rooms", type=int, default=10,
                        help="rooms whose clients have a process of their own, to measure "
                             "latency with")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the kill")
    parser.add_argument("--storm", type=float, default=20.0,
                        help="seconds after the kill before sending stops")
    parser.add_argument("--drain", type=float, default=15.0,
                        help="seconds to wait for the last deliveries")
    parser.add_argument("--deadline", type=float, default=120.0,
                        help="seconds any phase may take before the run is given up")
    parser.add_argument("--node-arg", action="append", default=[],
                        help="an extra `python -m node` flag (e.g. --handshake-backlog=100)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.nodes < 2 or args.clients < args.rooms:
        parser.error("needs at least 2 nodes and a client per room")
    if not 0 < args.observer_rooms < args.rooms:
        parser.error("the observer needs some rooms, and the storm the others")
    summary = run(args)
    if args.json:
        save(args.json, "storm", "loadtest.storm", args, summary)


if __name__ == "__main__":
    main()
