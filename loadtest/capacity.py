"""Capacity report and planner, from measured results.

    .venv/bin/python -m loadtest.capacity results/*.json results/locust_stats.csv --out report \\
        --users 50000 --room-size 20 --messages-per-minute 2

Reads fan-out benchmark results (`python -m loadtest.fanout --json`, both the stepped and
the `--idle` kind, on one Redis or `--redis-cluster`), admission results (`python -m
loadtest.admission --json`) and Locust `--csv` statistics (`*_stats.csv`), fits a cost model and
writes `report.md` with PNG plots: deliveries/s per node against CPU, latency against load,
memory per connection, Redis CPU per thousand deliveries. The planner turns concurrent users,
the room-size mix and messages per user per minute into nodes, gateway, Redis (or Redis
Cluster shards) and the time a reconnect storm takes, at the stated headroom, and says which
resource runs out first.

The model, fitted by least squares over the passing steps of direct runs:
node CPU (cores) = a * deliveries/s on the node + b * publishes/s on the node + idle;
Redis CPU (cores) = r * publishes/s * nodes subscribed per room / nodes subscribed when
measured (an upper bound: the script part of a publish does not grow with subscribers);
nginx CPU (cores) = g * deliveries/s through it; node RSS = base + connections * per
connection; a lost node's users resume at s sessions/s on each other node. One node process
uses at most one core: run one node per core.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from loadtest.fanout import redis_cpu  # noqa: E402

MIB = 1024


@dataclass
class Results:
    """Everything read from the result files."""

    fanout: list[dict[str, Any]] = field(default_factory=list)
    idle: list[dict[str, Any]] = field(default_factory=list)
    admission: list[dict[str, Any]] = field(default_factory=list)
    redis_memory: list[dict[str, Any]] = field(default_factory=list)
    locust: dict[str, list[dict[str, str]]] = field(default_factory=dict)


def load(paths: list[Path]) -> Results:
    results = Results()
    for path in paths:
        if path.suffix == ".csv":
            with open(path, newline="") as rows:
                results.locust[path.name] = list(csv.DictReader(rows))
            continue
        data = json.loads(path.read_text())
        data["file"] = path.name
        if data["benchmark"] == "idle":
            results.idle.append(data)
        elif data["benchmark"] == "admission":
            results.admission.append(data)
        elif data["benchmark"] == "redis_memory":
            results.redis_memory.append(data)
        elif data["benchmark"] == "fanout":  # other benchmarks plan nothing
            results.fanout += _chat_runs(data)
    return results


def _chat_runs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat cluster's runs of a fan-out file, each as one run (a file holds several:
    sender placements, room shapes, and a peer's runs with --compare, which plan nothing
    here), each with the arguments it ran with."""
    if "runs" not in data:
        return [data]  # one run per file, as written before --compare
    shared = {k: v for k, v in data.items() if k != "runs"}
    return [shared | run | {"args": shared["args"] | {"spread": run["spread"]}
                            | run.get("shape", {})}
            for run in data["runs"] if run["system"] == "chat"]


# --- the model -------------------------------------------------------------------------------

@dataclass
class Model:
    per_delivery: float  # node core-seconds per delivery
    per_publish: float  # node core-seconds per publish, beyond its deliveries
    node_idle: float  # cores
    redis_per_publish: float  # Redis core-seconds per publish at `redis_nodes` subscribers
    redis_nodes: int
    nginx_per_delivery: float | None  # None without a gateway run
    kib_per_connection: float
    node_base_kib: float
    # Redis Cluster runs (--redis-cluster): a publish costs its shard's primary this, and the
    # shard's replica that (core-seconds, at `redis_nodes` subscribers); None when not run.
    shard_per_publish: float | None = None
    replica_per_publish: float | None = None
    # Full sessions (upgrade, auth, join, room_joined) one node admits per second
    # (`python -m loadtest.admission`); None when not measured.
    sessions_per_s: float | None = None
    # Node cores an idle connection costs (its pings and pongs), from idle runs that
    # measured CPU; 0 when none did.
    per_connection: float = 0.0
    # Node and Redis core-seconds per room join (a switch of rooms: a subscribe, an
    # unsubscribe, presence out and in), from fan-out runs with --churn; 0 when none ran.
    per_join: float = 0.0
    redis_per_join: float = 0.0
    # Redis memory (`python -m loadtest.redis_memory`): bytes of a room with one member, of
    # each further member, and of a stored message beyond its text; None when not measured.
    redis_memory: tuple[float, float, float] | None = None


def load_seconds(run: dict[str, Any]) -> float:
    """A step's CPU is read over the step and its drain; the load ran for the step only."""
    return float(run["args"]["step_seconds"])


def passing_steps(runs: list[dict[str, Any]], gateway: bool) -> list[tuple[dict, dict]]:
    return [(run, step) for run in runs for step in run["steps"]
            if step["passed"] and bool(run["args"]["gateway"]) == gateway]


def churn(run: dict[str, Any]) -> float:
    """The visitor joins per second a fan-out run had during its steps (--churn)."""
    return float(run["args"].get("churn", 0.0))


def node_samples(runs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """One row per node and passing direct step on one Redis: (deliveries/s, publishes/s,
    joins/s, 1) -> cores (the visitors of --churn are spread evenly over the nodes). Redis
    Cluster runs measure the shards; they are made for that, not in the room shapes the
    node model is fitted on."""
    features, cores = [], []
    for run, step in passing_steps(runs, gateway=False):
        if run["args"].get("redis_cluster"):
            continue
        for node, share in run["placement"].items():
            features.append([step["achieved_per_s"] * share["members"],
                             step["published_per_s"] * share["senders"],
                             churn(run) / run["args"]["nodes"], 1.0])
            cores.append(step["cpu_s"][node] / load_seconds(run))
    return np.array(features), np.array(cores)


def fit(results: Results) -> Model:
    if not passing_steps(results.fanout, gateway=False):
        raise SystemExit("no passing step of a direct fan-out run: nothing to plan from")
    features, cores = node_samples(results.fanout)
    (per_delivery, per_publish, per_join, idle), *_ = np.linalg.lstsq(features, cores,
                                                                        rcond=None)
    direct = passing_steps(results.fanout, gateway=False)
    churned = [(run, step) for run, step in direct if churn(run)]
    publishing = [(run, step) for run, step in direct if not churn(run)]  # Redis: publishes
    single = [(run, step) for run, step in publishing if not run["args"].get("redis_cluster")]
    sharded = [(run, step) for run, step in publishing if run["args"].get("redis_cluster")]
    gateway = passing_steps(results.fanout, gateway=True)
    nginx = [step["cpu_s"]["nginx"] / load_seconds(run) / step["achieved_per_s"]
             for run, step in gateway]
    idle_nodes = [node for run in results.idle for node in run["nodes"].values()]
    if not idle_nodes:
        raise SystemExit("no idle run (python -m loadtest.fanout --idle): memory is unknown")
    redis_per_publish = _per_publish(single or sharded, "redis")
    return Model(
        per_delivery=max(0.0, float(per_delivery)), per_publish=max(0.0, float(per_publish)),
        node_idle=max(0.0, float(idle)),
        redis_per_publish=redis_per_publish,
        redis_nodes=min(publishing[0][0]["args"]["nodes"], publishing[0][0]["args"]["members"]),
        shard_per_publish=_per_publish(sharded, "redis") if sharded else None,
        sessions_per_s=_sessions_per_s(results.admission),
        replica_per_publish=_per_publish(sharded, "replica") if sharded else None,
        nginx_per_delivery=float(np.median(nginx)) if nginx else None,
        kib_per_connection=float(np.mean([n["kib_per_connection"] for n in idle_nodes])),
        node_base_kib=float(np.mean([n["rss_before_kib"] for n in idle_nodes])),
        per_connection=_per_connection(idle_nodes),
        per_join=max(0.0, float(per_join)),
        redis_per_join=_redis_per_join(churned, redis_per_publish),
        redis_memory=_redis_memory(results.redis_memory),
    )


def _redis_memory(runs: list[dict[str, Any]]) -> tuple[float, float, float] | None:
    """(room, member, message beyond its text) bytes, averaged over the runs."""
    if not runs:
        return None
    return (float(np.mean([run["bytes per room"] for run in runs])),
            float(np.mean([run["bytes per member"] for run in runs])),
            float(np.mean([run["bytes per message"] - run["text"] for run in runs])))


def _redis_per_join(steps: list[tuple[dict, dict]], per_publish: float) -> float:
    """Median Redis core-seconds per join over the --churn steps, beyond their publishes."""
    if not steps:
        return 0.0
    return max(0.0, float(np.median([
        (redis_cpu(step["cpu_s"], "redis") / load_seconds(run)
         - per_publish * step["published_per_s"]) / churn(run) for run, step in steps])))


def _per_connection(idle_nodes: list[dict[str, Any]]) -> float:
    """Median node cores per idle connection over the idle runs that measured CPU."""
    shares = [n["idle_cpu_percent"] / 100 / n["connections"] for n in idle_nodes
              if "idle_cpu_percent" in n and n["connections"]]
    return float(np.median(shares)) if shares else 0.0


def _sessions_per_s(files: list[dict[str, Any]]) -> float | None:
    """Median full sessions a node admitted per second over every measured concurrency."""
    rates = [run["joined_per_s"] for data in files for run in data["runs"]]
    return float(np.median(rates)) if rates else None


def _per_publish(steps: list[tuple[dict, dict]], role: str) -> float:
    """Median core-seconds per publish of the Redis processes of `role` (one Redis, or all
    primaries or all replicas of a Redis Cluster: a publish runs on one shard only)."""
    return float(np.median([redis_cpu(step["cpu_s"], role) / load_seconds(run)
                            / step["published_per_s"] for run, step in steps]))


# --- the planner -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Demand:
    users: int
    rooms: dict[int, float]  # room size -> share of the users in rooms of that size
    messages_per_minute: float
    headroom: float
    node_memory_mib: int
    max_connections: int
    joins_per_minute: float = 0.0  # room joins (or switches) per user per minute
    text_bytes: float = 100.0  # a message's text, in UTF-8
    history: int = 100  # the nodes' --history and --history-bytes: what a room keeps
    history_bytes: int = 262144

    @property
    def joins(self) -> float:
        return self.users * self.joins_per_minute / 60

    @property
    def publishes(self) -> float:
        return self.users * self.messages_per_minute / 60

    @property
    def room_size(self) -> float:
        """Members of the room of an average message (sent by an average user)."""
        return sum(size * share for size, share in self.rooms.items())

    @property
    def deliveries(self) -> float:
        return self.publishes * self.room_size

    @property
    def rooms_held(self) -> float:
        """Rooms the users are in (each user in one room)."""
        return sum(self.users * share / size for size, share in self.rooms.items())


def redis_memory_bytes(model: Model, demand: Demand) -> float | None:
    """Redis memory for the users' rooms, their members and full histories."""
    if model.redis_memory is None:
        return None
    room, member, overhead = model.redis_memory
    message = overhead + demand.text_bytes
    kept = min(demand.history, max(1, int(demand.history_bytes // message)))
    rooms = demand.rooms_held
    return rooms * (room + kept * message) + (demand.users - rooms) * member


def subscribed_nodes(nodes: int, rooms: dict[int, float]) -> float:
    """Expected distinct nodes a room's members are spread over, weighted like messages."""
    return sum(share * nodes * (1 - (1 - 1 / nodes) ** size) for size, share in rooms.items())


def plan(model: Model, demand: Demand) -> dict[str, Any]:
    usable = 1 - demand.headroom
    work = (model.per_delivery * demand.deliveries + model.per_publish * demand.publishes
            + model.per_connection * demand.users
            + model.per_join * demand.joins)  # cores, all nodes together
    cpu_nodes = work / max(1e-9, usable - model.node_idle)
    memory_budget = usable * demand.node_memory_mib * MIB - model.node_base_kib
    memory_nodes = demand.users * model.kib_per_connection / memory_budget
    connection_nodes = demand.users / (usable * demand.max_connections)
    needs = {"CPU": cpu_nodes, "memory": memory_nodes, "connections": connection_nodes}
    binding = max(needs, key=lambda k: needs[k])
    nodes = max(1, math.ceil(needs[binding]))
    spread = subscribed_nodes(nodes, demand.rooms)
    redis_per_publish = model.redis_per_publish * spread / model.redis_nodes
    joins_redis = model.redis_per_join * demand.joins
    redis_cores = redis_per_publish * demand.publishes + joins_redis
    shard_per_publish = (model.shard_per_publish or model.redis_per_publish
                         ) * spread / model.redis_nodes
    shards = max(1, math.ceil((shard_per_publish * demand.publishes + joins_redis) / usable))
    return {
        "publishes_per_s": demand.publishes, "deliveries_per_s": demand.deliveries,
        "needs": needs, "binding": binding, "nodes": nodes, "nodes_n_plus_1": nodes + 1,
        "node_cpu": work / nodes + model.node_idle,
        "node_rss_mib": (model.node_base_kib + demand.users / nodes
                         * model.kib_per_connection) / MIB,
        "redis_cores": redis_cores, "redis_fits": redis_cores <= usable,
        "redis_ceiling_publishes": usable / redis_per_publish,
        # Redis Cluster: rooms hash evenly over the shards, each publish costs one shard
        "redis_shards": shards,
        "shard_cores": (shard_per_publish * demand.publishes + joins_redis) / shards,
        "replica_cores": (model.replica_per_publish * spread / model.redis_nodes
                          * demand.publishes / shards
                          if model.replica_per_publish is not None else None),
        "subscribed_nodes": spread,
        "connections_by_memory": memory_budget / model.kib_per_connection,
        # A lost node's users resume on the others; all users at once after a full outage.
        "storm_seconds": (demand.users / nodes / ((nodes - 1) * model.sessions_per_s)
                          if model.sessions_per_s and nodes > 1 else None),
        "cold_start_seconds": (demand.users / (nodes * model.sessions_per_s)
                               if model.sessions_per_s else None),
        "gateway_cores": (model.nginx_per_delivery * demand.deliveries
                          if model.nginx_per_delivery is not None else None),
        "redis_memory_bytes": redis_memory_bytes(model, demand),
    }


# --- the model against runs it was not fitted on ---------------------------------------------

def predicted_cores(model: Model, run: dict[str, Any], step: dict[str, Any]
                    ) -> dict[str, float | None]:
    """The model's CPU (cores) for a measured step: all nodes together, Redis and nginx."""
    args = run["args"]
    clients = args["rooms"] * args["members"]
    if args["gateway"]:  # nginx places each client: a room spans nodes at random
        spread = subscribed_nodes(args["nodes"], {args["members"]: 1.0})
    else:
        spread = min(args["nodes"], args["members"])
    return {
        "nodes": (model.per_delivery * step["achieved_per_s"]
                  + model.per_publish * step["published_per_s"]
                  + model.per_connection * clients + model.node_idle * args["nodes"]),
        "redis": model.redis_per_publish * step["published_per_s"] * spread / model.redis_nodes,
        "nginx": (model.nginx_per_delivery * step["achieved_per_s"]
                  if args["gateway"] and model.nginx_per_delivery is not None else None),
    }


def measured_cores(run: dict[str, Any], step: dict[str, Any]) -> dict[str, float | None]:
    seconds = load_seconds(run)
    cpu = step["cpu_s"]
    return {"nodes": sum(v for k, v in cpu.items() if k.startswith("node")) / seconds,
            "redis": redis_cpu(cpu) / seconds,
            "nginx": cpu["nginx"] / seconds if "nginx" in cpu else None}


def check(model: Model, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predicted against measured CPU at every passing step of `runs` (not fitted on)."""
    rows = []
    for run in runs:
        for step in (s for s in run["steps"] if s["passed"]):
            predicted, measured = predicted_cores(model, run, step), measured_cores(run, step)
            for part in ("nodes", "redis", "nginx"):
                if (p := predicted[part]) is not None and (m := measured[part]):
                    rows.append({"run": _label(run), "per_s": step["achieved_per_s"],
                                 "part": part, "predicted": p, "measured": m,
                                 "error": p / m - 1})
    return rows


def _check_section(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    worst = max(rows, key=lambda row: abs(row["error"]))
    return ["## The model against runs it was not fitted on", "",
            "| run | deliveries/s | CPU of | predicted cores | measured cores | error |",
            "|---|---|---|---|---|---|",
            *[f"| {r['run']} | {r['per_s']:,} | {r['part']} | {r['predicted']:.3f} | "
              f"{r['measured']:.3f} | {r['error']:+.0%} |" for r in rows], "",
            f"Largest error: {worst['error']:+.0%} ({worst['part']} at "
            f"{worst['per_s']:,} deliveries/s).", ""]


# --- the report ------------------------------------------------------------------------------

def _label(run: dict[str, Any]) -> str:
    args = run["args"]
    return (f"{args['nodes']} nodes, {args['rooms']}x{args['members']}, "
            f"{args['senders']} sender{'s' if args['senders'] > 1 else ''}, "
            f"{'gateway' if args['gateway'] else 'direct'}")


def plot_node_cpu(results: Results, model: Model, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    features, cores = node_samples(results.fanout)
    ax.scatter(features[:, 0], cores, label="measured (node, step)")
    xs = np.linspace(0, max(features[:, 0]) * 1.1, 50)
    ax.plot(xs, model.per_delivery * xs + model.node_idle, "--",
            label="fit: fan-out only (no publishes)")
    ax.set(xlabel="deliveries/s written by the node", ylabel="node CPU (cores)",
           title="Node CPU against fan-out")
    ax.legend()
    return _save(fig, out, "node_cpu.png")


def plot_latency(results: Results, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in results.fanout:
        rate = [s["achieved_per_s"] for s in run["steps"]]
        for q, style in (("p50_ms", ":"), ("p99_ms", "-")):
            ax.plot(rate, [s[q] for s in run["steps"]], style, marker="o",
                    label=f"{q[:3]} {_label(run)}")
    ax.set(xlabel="deliveries/s (whole cluster)", ylabel="latency (ms)", yscale="log",
           title="Delivery latency against load")
    ax.legend(fontsize=7)
    return _save(fig, out, "latency.png")


def plot_memory(results: Results, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [f"{run['file']}\n{node}" for run in results.idle for node in run["nodes"]]
    values = [n["kib_per_connection"] for run in results.idle for n in run["nodes"].values()]
    ax.bar(names, values)
    ax.set(ylabel="KiB of node RSS per connection", title="Memory per idle connection")
    return _save(fig, out, "memory.png")


def plot_redis(results: Results, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in results.fanout:
        steps = [s for s in run["steps"] if s["achieved_per_s"]]
        ax.plot([s["achieved_per_s"] for s in steps],
                [1e6 * redis_cpu(s["cpu_s"]) / load_seconds(run) / s["achieved_per_s"]
                 for s in steps], marker="o", label=_label(run))
    ax.set(xlabel="deliveries/s", ylabel="Redis CPU ms per second per 1000 deliveries/s",
           title="Redis CPU per thousand deliveries")
    ax.legend(fontsize=7)
    return _save(fig, out, "redis.png")


def _save(fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def _fanout_section(results: Results) -> list[str]:
    lines = []
    for run in results.fanout:
        lines += [f"### {_label(run)} ({run['file']})", "", f"`{run['command']}`", "",
                  "| target/s | achieved/s | loss | p50 ms | p99 ms | node CPU (cores) | "
                  "Redis CPU | nginx CPU | generator CPU | result |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in run["steps"]:
            cores = {k: v / load_seconds(run) for k, v in s["cpu_s"].items()}
            nodes = " ".join(f"{cores[k]:.2f}" for k in sorted(cores) if k.startswith("node"))
            lines.append(
                f"| {s['target_per_s']:.0f} | {s['achieved_per_s']} | {s['loss']:.2%} | "
                f"{s['p50_ms']} | {s['p99_ms']} | {nodes} | {redis_cpu(cores):.2f} | "
                f"{cores.get('nginx', 0):.2f} | {cores['generator']:.2f} | "
                f"{'pass' if s['passed'] else 'FAIL'} |")
        lines += ["", f"Max passing: **{run['max_passing_per_s']} deliveries/s**.", ""]
    return lines


def _node_cores(model: Model, run: dict[str, Any], step: dict[str, Any]) -> float:
    """The model's node CPU (cores, all nodes) for a measured step."""
    return sum(model.per_delivery * step["achieved_per_s"] * share["members"]
               + model.per_publish * step["published_per_s"] * share["senders"]
               + model.node_idle for share in run["placement"].values())


def _shapes_section(results: Results, model: Model) -> list[str]:
    """Measured against modelled node CPU at each room shape's top passing step: where the
    linear model holds, and by how much it errs, from rooms of 2 to rooms of thousands."""
    lines = ["## Room shapes: measured against the model", "",
             "| members × rooms | top passing deliveries/s | node CPU per delivery, measured | "
             "modelled | model ÷ measured | p99 ms |", "|---|---|---|---|---|---|"]
    for run in sorted(results.fanout, key=lambda r: r["args"]["members"]):
        steps = [s for s in run["steps"] if s["passed"]]
        if run["args"]["gateway"] or run["args"].get("redis_cluster") or not steps:
            continue
        top = steps[-1]
        measured = sum(v for k, v in top["cpu_s"].items() if k.startswith("node")
                       ) / load_seconds(run)
        modelled = _node_cores(model, run, top)
        per = 1e6 / top["achieved_per_s"]
        lines.append(f"| {run['args']['members']} × {run['args']['rooms']} | "
                     f"{top['achieved_per_s']:,} | {measured * per:.1f} µs | "
                     f"{modelled * per:.1f} µs | {modelled / measured:.2f} | {top['p99_ms']} |")
    return [*lines, ""]


def _locust_section(results: Results) -> list[str]:
    lines = []
    for name, rows in results.locust.items():
        lines += [f"### Locust: {name}", "",
                  "| request | count | failures | median ms | p95 ms | p99 ms | max ms |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['Name']} | {r['Request Count']} | {r['Failure Count']} | "
                  f"{r['50%']} | {r['95%']} | {r['99%']} | {float(r['Max Response Time']):.0f} |"
                  for r in rows]
        lines.append("")
    return lines


def _plan_section(model: Model, demand: Demand, result: dict[str, Any]) -> list[str]:
    needs = result["needs"]
    gateway = ("not measured (no gateway run)" if result["gateway_cores"] is None
               else f"{result['gateway_cores']:.2f} cores of nginx")
    rooms = ", ".join(f"{share:.0%} of users in rooms of {size}"
                      for size, share in demand.rooms.items())
    return [
        "## Plan", "",
        f"Demand: {demand.users:,} concurrent users; {rooms}; "
        f"{demand.messages_per_minute:g} messages and {demand.joins_per_minute:g} room "
        f"joins per user per minute; headroom "
        f"{demand.headroom:.0%} (each resource planned to at most "
        f"{1 - demand.headroom:.0%} use).", "",
        f"- Messages: {result['publishes_per_s']:,.0f} publishes/s, "
        f"{result['deliveries_per_s']:,.0f} deliveries/s; {demand.joins:,.0f} room joins/s.",
        f"- Nodes needed for CPU {needs['CPU']:.2f}, for memory {needs['memory']:.2f} "
        f"({demand.node_memory_mib} MiB per node), for the connection limit "
        f"{needs['connections']:.2f} ({demand.max_connections:,} per node: a setting, "
        f"`--max-connections`; memory alone would allow "
        f"{result['connections_by_memory']:,.0f} per node).",
        f"- **{result['nodes']} nodes** (one per core); {result['nodes_n_plus_1']} to stay "
        f"within headroom while one is drained or lost. **{result['binding']} runs out "
        f"first.** Each node then runs at {result['node_cpu']:.2f} cores and "
        f"{result['node_rss_mib']:.0f} MiB RSS.",
        f"- Redis: {result['redis_cores']:.2f} cores (rooms span "
        f"{result['subscribed_nodes']:.1f} nodes on average); "
        + ("one Redis suffices." if result["redis_fits"] else
           "**one Redis is not enough**: run Redis Cluster (`--redis-cluster`)."),
        f"- Redis Cluster: **{result['redis_shards']} shard"
        f"{'s' if result['redis_shards'] > 1 else ''}**, each primary at "
        f"{result['shard_cores']:.2f} cores"
        + (f" and its replica at {result['replica_cores']:.2f}"
           if result["replica_cores"] is not None else "")
        + (" (per-shard cost measured with `--redis-cluster`)." if model.shard_per_publish
           is not None else " (from the single-Redis cost: run the fan-out benchmark with "
           "`--redis-cluster` to measure a shard's)."),
        f"- Redis pub/sub ceiling at this spread: about "
        f"{result['redis_ceiling_publishes']:,.0f} publishes/s "
        f"({result['redis_ceiling_publishes'] * demand.room_size:,.0f} deliveries/s) before "
        "one Redis core passes the headroom.",
        f"- Redis memory: {_redis_memory_line(result, demand)}",
        f"- Gateway: {gateway}.",
        f"- Reconnect storm: {_storm(model, result, demand)}", "",
    ]


def _redis_memory_line(result: dict[str, Any], demand: Demand) -> str:
    if result["redis_memory_bytes"] is None:
        return "not planned (no run of `python -m loadtest.redis_memory --json ...`)."
    return (f"about {result['redis_memory_bytes'] / MIB / MIB:,.0f} MiB for "
            f"{demand.rooms_held:,.0f} rooms, their members and full histories "
            f"({demand.history} messages of {demand.text_bytes:g}-byte texts, at most "
            f"{demand.history_bytes:,} bytes a room); keep Redis's `maxmemory` above it.")


def _storm(model: Model, result: dict[str, Any], demand: Demand) -> str:
    if result["cold_start_seconds"] is None:
        return ("not planned (no admission run: `python -m loadtest.admission --json ...`).")
    lost = (f"a lost node's {demand.users / result['nodes']:,.0f} users resume on the other "
            f"{result['nodes'] - 1} at {model.sessions_per_s:,.0f} sessions/s each in about "
            f"**{result['storm_seconds']:.1f} s**; " if result["storm_seconds"] is not None
            else "")
    return (f"{lost}all {demand.users:,} at once (after a full outage) in about "
            f"{result['cold_start_seconds']:.1f} s, the rest answered 503 `Retry-After` "
            "meanwhile (`--handshake-backlog`).")


def _model_section(model: Model) -> list[str]:
    nginx = ("not measured" if model.nginx_per_delivery is None
             else f"{model.nginx_per_delivery * 1e6:.2f} µs per delivery")
    return [
        "## Cost model (fitted)", "",
        "| quantity | value |", "|---|---|",
        f"| node CPU per delivery | {model.per_delivery * 1e6:.2f} µs |",
        f"| node CPU per publish (beyond its deliveries) | {model.per_publish * 1e6:.2f} µs |",
        f"| node idle CPU | {model.node_idle:.3f} cores |",
        f"| node CPU per idle connection (pings, pongs) | {model.per_connection * 1e6:.2f} "
        "µs/s |",
        f"| node CPU per room join (fan-out runs with --churn) | {model.per_join * 1e6:.0f} µs |",
        f"| Redis CPU per room join | {model.redis_per_join * 1e6:.0f} µs |",
        f"| Redis CPU per publish ({model.redis_nodes} subscribed nodes) | "
        f"{model.redis_per_publish * 1e6:.2f} µs |",
        *([f"| Redis Cluster: shard primary CPU per publish | "
           f"{model.shard_per_publish * 1e6:.2f} µs |",
           f"| Redis Cluster: replica CPU per publish | "
           f"{(model.replica_per_publish or 0) * 1e6:.2f} µs |"]
          if model.shard_per_publish is not None else []),
        f"| nginx CPU | {nginx} |",
        f"| node RSS per connection | {model.kib_per_connection:.2f} KiB |",
        *([f"| full sessions a node admits per second | {model.sessions_per_s:,.0f} |"]
          if model.sessions_per_s is not None else []),
        f"| node RSS at start | {model.node_base_kib / MIB:.0f} MiB |", "",
    ]


def report(results: Results, demand: Demand, out: Path,
           unfitted: Sequence[dict[str, Any]] = ()) -> Path:
    """The report, with the model checked against the `unfitted` fan-out runs."""
    out.mkdir(parents=True, exist_ok=True)
    model = fit(results)
    figures = [plot_node_cpu(results, model, out), plot_latency(results, out),
               plot_memory(results, out), plot_redis(results, out)]
    lines = ["# Capacity report", "",
             *_plan_section(model, demand, plan(model, demand)),
             *_check_section(check(model, list(unfitted))),
             *_model_section(model),
             *_shapes_section(results, model),
             "## Plots", "", *[f"![{name}]({name})" for name in figures], "",
             "## Fan-out runs", "", *_fanout_section(results),
             "## Idle connections", "",
             *[f"- {run['file']}: " + ", ".join(
                 f"{node} {n['connections']} connections, {n['kib_per_connection']} KiB each"
                 + (f", {n['idle_cpu_percent']} % of a core" if "idle_cpu_percent" in n else "")
                 for node, n in run["nodes"].items()) for run in results.idle], "",
             *_locust_section(results)]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def parse_rooms(spec: str) -> dict[int, float]:
    """`20` or `20:0.8,200:0.2` (room size: share of users), shares normalised."""
    rooms: dict[int, float] = {}
    for part in spec.split(","):
        size, _, share = part.partition(":")
        rooms[int(size)] = float(share or 1)
    total = sum(rooms.values())
    return {size: share / total for size, share in rooms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.capacity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+",
                        help="fanout --json files and Locust *_stats.csv files")
    parser.add_argument("--out", type=Path, default=Path("capacity-report"))
    parser.add_argument("--check", type=Path, action="append", default=[], metavar="RUN",
                        help="a fan-out --json file the model is not fitted on: its passing "
                             "steps' CPU predicted and compared with what they measured")
    parser.add_argument("--users", type=int, default=50000, help="concurrent users")
    parser.add_argument("--room-size", default="20",
                        help="room sizes and the share of users in each: 20 or 20:0.8,500:0.2")
    parser.add_argument("--messages-per-minute", type=float, default=2.0,
                        help="messages each user sends per minute")
    parser.add_argument("--joins-per-minute", type=float, default=0.0,
                        help="rooms each user joins (or switches to) per minute (costed from "
                             "fan-out runs with --churn)")
    parser.add_argument("--headroom", type=float, default=0.3,
                        help="share of every resource kept free (default 0.3)")
    parser.add_argument("--node-memory-mib", type=int, default=1024,
                        help="memory each node may use (default 1024)")
    parser.add_argument("--max-connections", type=int, default=10000,
                        help="the nodes' --max-connections (default 10000)")
    parser.add_argument("--text-bytes", type=float, default=100.0,
                        help="bytes of a message's text (default 100)")
    parser.add_argument("--history", type=int, default=100,
                        help="the nodes' --history (default 100)")
    parser.add_argument("--history-bytes", type=int, default=262144,
                        help="the nodes' --history-bytes (default 262144)")
    args = parser.parse_args()
    demand = Demand(args.users, parse_rooms(args.room_size), args.messages_per_minute,
                    args.headroom, args.node_memory_mib, args.max_connections,
                    args.joins_per_minute, args.text_bytes, args.history, args.history_bytes)
    unfitted = load(args.check).fanout
    path = report(load(args.results), demand, args.out, unfitted)
    print(path.read_text().split("## Cost model")[0])
    print(f"report: {path}")


if __name__ == "__main__":
    main()
