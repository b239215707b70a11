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

The model, fitted over the passing steps (each figure per second):
node CPU (cores) = w * writes to clients (w_gateway through nginx, w_direct direct; a busy
client's frames share a write) + p * messages its clients publish + e * envelopes it
receives (a message reaches every node its room spans) + j * room joins + c * connections
(their pings, from the idle runs), by least squares without an intercept;
Redis CPU (cores) = k * (publishes * nodes subscribed per room / 2)^x, fitted in logs (Redis
shares its wake-ups among the publishes that arrive together);
nginx CPU (cores) = g * writes relayed + h * deliveries + c' * connections;
node RSS = base + connections * per connection; a lost node's users resume at s sessions/s
on each other node. One node process uses at most one core: run one node per core.
`--check RUN.json` (repeatable) predicts the CPU of a fan-out run the model was not fitted
on and reports the error.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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
from node.config import Settings  # noqa: E402

MIB = 1024
REDIS_RATE = 1000.0  # publishes/s at which the Redis model states its cost per publish
REDIS_NODES = 2  # subscribed nodes the Redis model is stated at
FIXED_POINT_ROUNDS = 100  # of the CPU's node count (it converges in a few)


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
    # Node core-seconds per write to a client through the gateway (a Unix socket to nginx),
    # one or more frames: a busy client's frames share writes (--busy-rate, --write-delay).
    per_gateway_write: float
    per_publish: float  # node core-seconds per message a client of the node publishes
    redis_per_publish: float  # Redis core-seconds per publish at `redis_nodes` subscribers
    redis_nodes: int
    nginx_per_write: float | None  # core-seconds per write relayed; None without a gateway run
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
    # Node core-seconds per write to a client connected to it directly (loopback TCP in the
    # direct runs; what the room shapes are measured with).
    per_write: float = 0.0
    # Redis CPU = redis_per_publish × REDIS_RATE × (publishes ÷ REDIS_RATE)^redis_exponent
    # (1: linear); nginx beyond its writes: per delivery (bytes) and per idle connection.
    # Node core-seconds per envelope it receives from Redis (a room's message reaches every
    # node subscribed to the room, however few members it has there).
    per_envelope: float = 0.0
    redis_exponent: float = 1.0
    nginx_per_delivery: float = 0.0
    nginx_per_connection: float = 0.0

    def redis_cores(self, publishes: float, spread: float) -> float:
        """One Redis's CPU for `publishes` a second to rooms spanning `spread` nodes."""
        rate = publishes * spread / self.redis_nodes
        if rate <= 0:
            return 0.0
        return self.redis_per_publish * REDIS_RATE * (rate / REDIS_RATE) ** self.redis_exponent

    def redis_ceiling(self, cores: float, spread: float) -> float:
        """The publishes a second at which one Redis reaches `cores`."""
        rate = REDIS_RATE * (cores / (self.redis_per_publish * REDIS_RATE)) ** (
            1 / self.redis_exponent)
        return rate * self.redis_nodes / spread

    def gateway_cores(self, writes: float, deliveries: float, connections: float
                      ) -> float | None:
        """nginx's CPU, or None without a gateway run."""
        if self.nginx_per_write is None:
            return None
        return (self.nginx_per_write * writes + self.nginx_per_delivery * deliveries
                + self.nginx_per_connection * connections)


def load_seconds(run: dict[str, Any]) -> float:
    """A step's CPU is read over the step and its drain; the load ran for the step only."""
    return float(run["args"]["step_seconds"])


def passing_steps(runs: list[dict[str, Any]], gateway: bool) -> list[tuple[dict, dict]]:
    return [(run, step) for run in runs for step in run["steps"]
            if step["passed"] and bool(run["args"]["gateway"]) == gateway]


def churn(run: dict[str, Any]) -> float:
    """The visitor joins per second a fan-out run had during its steps (--churn)."""
    return float(run["args"].get("churn", 0.0))


def frames_per_write(step: dict[str, Any], node: str | None = None) -> float:
    """Frames a node's writes to clients carried in a step (all nodes' mean without `node`);
    1 where the run did not record it."""
    per_node = step.get("frames_per_write") or {}
    if node is not None:
        return float(per_node.get(node) or 1.0)
    return float(np.mean(list(per_node.values()))) if per_node else 1.0


def clients(run: dict[str, Any]) -> int:
    return int(run["args"]["rooms"] * run["args"]["members"])


def node_samples(runs: list[dict[str, Any]], per_connection: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One row per node and passing step on one Redis: (direct writes/s, writes/s through
    the gateway, publishes/s, envelopes received/s, joins/s) -> cores beyond its
    connections' pings (`per_connection` each, from the idle runs). Through the gateway,
    nginx spreads the clients and senders evenly; the visitors of --churn are spread
    evenly. No intercept: an idle node's cost is its connections'. Redis Cluster runs
    measure the shards; they are made for that, not in the shapes the model is fitted on."""
    features, cores = [], []
    for run, step in passing_steps(runs, gateway=False) + passing_steps(runs, gateway=True):
        if run["args"].get("redis_cluster"):
            continue
        nodes = run["args"]["nodes"]
        gateway = bool(run["args"]["gateway"])
        for node, share in _shares(run).items():
            writes = step["achieved_per_s"] * share["members"] / frames_per_write(step, node)
            features.append([0.0 if gateway else writes, writes if gateway else 0.0,
                             step["published_per_s"] * share["senders"],
                             step["published_per_s"] * subscribed(run) / nodes,
                             churn(run) / nodes])
            cores.append(step["cpu_s"][node] / load_seconds(run)
                         - per_connection * clients(run) * share["members"])
    return np.array(features), np.array(cores)


def _shares(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each node's share of the members and senders: as placed, or even through nginx."""
    if run.get("placement"):
        return dict(run["placement"])
    nodes = run["args"]["nodes"]
    return {f"node{n + 1}": {"members": 1 / nodes, "senders": 1 / nodes} for n in range(nodes)}


def fit(results: Results) -> Model:
    if not passing_steps(results.fanout, gateway=False):
        raise SystemExit("no passing step of a direct fan-out run: nothing to plan from")
    idle_nodes = [node for run in results.idle for node in run["nodes"].values()]
    if not idle_nodes:
        raise SystemExit("no idle run (python -m loadtest.fanout --idle): memory is unknown")
    per_connection = _per_connection(idle_nodes)
    features, cores = node_samples(results.fanout, per_connection)
    # Least squares of the relative error: light steps weigh as much as heavy ones.
    (per_write, per_gateway_write, per_publish, per_envelope, per_join), *_ = (
        np.linalg.lstsq(features / cores[:, None], np.ones(len(cores)), rcond=None))
    direct = passing_steps(results.fanout, gateway=False)
    churned = [(run, step) for run, step in direct if churn(run)]
    publishing = [(run, step) for run, step in direct if not churn(run)]  # Redis: publishes
    single = [(run, step) for run, step in publishing if not run["args"].get("redis_cluster")]
    sharded = [(run, step) for run, step in publishing if run["args"].get("redis_cluster")]
    nginx_per_connection = _nginx_per_connection(results.idle)
    nginx = _nginx_fit(passing_steps(results.fanout, gateway=True), nginx_per_connection)
    redis_per_publish, redis_exponent = _redis_fit(single or sharded)
    model = Model(
        per_gateway_write=max(0.0, float(per_gateway_write)),
        per_publish=max(0.0, float(per_publish)),
        per_write=max(0.0, float(per_write)), per_envelope=max(0.0, float(per_envelope)),
        redis_per_publish=redis_per_publish, redis_exponent=redis_exponent,
        redis_nodes=REDIS_NODES,
        shard_per_publish=_per_publish(sharded, "redis") if sharded else None,
        sessions_per_s=_sessions_per_s(results.admission),
        replica_per_publish=_per_publish(sharded, "replica") if sharded else None,
        nginx_per_write=nginx[0] if nginx else None,
        nginx_per_delivery=nginx[1] if nginx else 0.0,
        nginx_per_connection=nginx_per_connection,
        kib_per_connection=float(np.mean([n["kib_per_connection"] for n in idle_nodes])),
        node_base_kib=float(np.mean([n["rss_before_kib"] for n in idle_nodes])),
        per_connection=per_connection,
        per_join=max(0.0, float(per_join)),
        redis_memory=_redis_memory(results.redis_memory),
    )
    return dataclasses.replace(model, redis_per_join=_redis_per_join(churned, model))


def _redis_memory(runs: list[dict[str, Any]]) -> tuple[float, float, float] | None:
    """(room, member, message beyond its text) bytes, averaged over the runs."""
    if not runs:
        return None
    return (float(np.mean([run["bytes per room"] for run in runs])),
            float(np.mean([run["bytes per member"] for run in runs])),
            float(np.mean([run["bytes per message"] - run["text"] for run in runs])))


def _redis_per_join(steps: list[tuple[dict, dict]], model: Model) -> float:
    """Median Redis core-seconds per join over the --churn steps, beyond their publishes."""
    if not steps:
        return 0.0
    return max(0.0, float(np.median([
        (redis_cpu(step["cpu_s"], "redis") / load_seconds(run)
         - model.redis_cores(step["published_per_s"], subscribed(run))) / churn(run)
        for run, step in steps])))


def subscribed(run: dict[str, Any]) -> float:
    """Nodes a room of the run spans: all it can without the gateway (member i of room r on
    node (r + i) % nodes), as chance places them through it."""
    nodes, members = run["args"]["nodes"], run["args"]["members"]
    if run["args"]["gateway"]:
        return subscribed_nodes(nodes, {members: 1.0})
    return float(min(nodes, members))


def _redis_fit(steps: list[tuple[dict, dict]]) -> tuple[float, float]:
    """Redis CPU against publishes, as cores = per publish × REDIS_RATE × (publishes ÷
    REDIS_RATE)^exponent at `REDIS_NODES` subscribed nodes, fitted in logs: Redis shares its
    wake-ups and writes among the publishes that arrive together, so a publish costs less
    the more there are. Returns (per publish at REDIS_RATE, exponent)."""
    rates = np.array([step["published_per_s"] * subscribed(run) / REDIS_NODES
                      for run, step in steps])
    cores = np.array([redis_cpu(step["cpu_s"], "redis") / load_seconds(run)
                      for run, step in steps])
    exponent, intercept = np.polyfit(np.log(rates / REDIS_RATE), np.log(cores), 1)
    return float(np.exp(intercept)) / REDIS_RATE, float(exponent)


def _nginx_per_connection(idle_runs: list[dict[str, Any]]) -> float:
    """Median nginx cores per idle WebSocket it relays (pings and pongs), over idle runs
    through the gateway."""
    shares = [run["cpu_percent"]["nginx"] / 100 / sum(n["connections"]
                                                      for n in run["nodes"].values())
              for run in idle_runs if "nginx" in run.get("cpu_percent", {})]
    return float(np.median(shares)) if shares else 0.0


def _nginx_fit(steps: list[tuple[dict, dict]], per_connection: float
               ) -> tuple[float, float] | None:
    """nginx cores = per write × writes + per delivery × deliveries, beyond its idle
    connections' cost: each write a node makes is a read and a write of nginx's, and the
    bytes follow the deliveries. Returns (per write, per delivery), or None without a
    gateway run."""
    if not steps:
        return None
    features = [[step["achieved_per_s"] / frames_per_write(step), step["achieved_per_s"]]
                for _, step in steps]
    cores = [step["cpu_s"]["nginx"] / load_seconds(run) - per_connection * clients(run)
             for run, step in steps]
    (per_write, per_delivery), *_ = np.linalg.lstsq(np.array(features), np.array(cores),
                                                     rcond=None)
    return max(0.0, float(per_write)), max(0.0, float(per_delivery))


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

def _node_default(name: str) -> Any:
    """A node setting's default (node.config)."""
    return next(f.default for f in dataclasses.fields(Settings) if f.name == name)


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
    busy_rate: float = _node_default("busy_rate")  # the nodes' --busy-rate, --write-delay
    write_delay: float = _node_default("write_delay")

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
    def writes(self) -> float:
        """Writes to clients: a member of a room of `size` receives `size` × messages per
        minute ÷ 60 events a second; past `busy_rate` they are gathered, a write every
        `write_delay`."""
        writes = 0.0
        for size, share in self.rooms.items():
            received = size * self.messages_per_minute / 60  # events/s a member receives
            frames = received * self.write_delay if received > self.busy_rate else 1.0
            writes += self.users * share * received / max(1.0, frames)
        return writes

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


def node_work(model: Model, demand: Demand, nodes: float) -> float:
    """Cores of node work, all nodes together, when the users are spread over `nodes`: a
    room's messages reach every node it spans, so the more nodes, the more envelopes."""
    spread = subscribed_nodes(max(1.0, nodes), demand.rooms)
    return (model.per_gateway_write * demand.writes
            + model.per_envelope * demand.publishes * spread
            + model.per_publish * demand.publishes
            + model.per_connection * demand.users + model.per_join * demand.joins)


def cpu_nodes(model: Model, demand: Demand, per_node: float) -> float:
    """Nodes the work needs at `per_node` cores each: the fixed point of node_work (it
    grows with the nodes, slower than they add; past a room's size it stops growing)."""
    nodes = node_work(model, demand, 1.0) / per_node
    for _ in range(FIXED_POINT_ROUNDS):
        needed = node_work(model, demand, nodes) / per_node
        if abs(needed - nodes) < 1e-6:
            break
        nodes = needed
    return nodes


def plan(model: Model, demand: Demand) -> dict[str, Any]:
    usable = 1 - demand.headroom
    memory_budget = usable * demand.node_memory_mib * MIB - model.node_base_kib
    memory_nodes = demand.users * model.kib_per_connection / memory_budget
    connection_nodes = demand.users / (usable * demand.max_connections)
    needs = {"CPU": cpu_nodes(model, demand, usable), "memory": memory_nodes,
             "connections": connection_nodes}
    binding = max(needs, key=lambda k: needs[k])
    nodes = max(1, math.ceil(needs[binding]))
    spread = subscribed_nodes(nodes, demand.rooms)
    work = node_work(model, demand, nodes)
    joins_redis = model.redis_per_join * demand.joins
    publishing = model.redis_cores(demand.publishes, spread)
    redis_cores = publishing + joins_redis
    # A shard's cost per publish as measured on Redis Cluster, else one Redis's at this rate
    shard_per_publish = (model.shard_per_publish * spread / model.redis_nodes
                         if model.shard_per_publish is not None
                         else publishing / max(demand.publishes, 1e-9))
    shards = max(1, math.ceil((shard_per_publish * demand.publishes + joins_redis) / usable))
    return {
        "publishes_per_s": demand.publishes, "deliveries_per_s": demand.deliveries,
        "needs": needs, "binding": binding, "nodes": nodes, "nodes_n_plus_1": nodes + 1,
        "node_cpu": work / nodes,
        "node_rss_mib": (model.node_base_kib + demand.users / nodes
                         * model.kib_per_connection) / MIB,
        "redis_cores": redis_cores, "redis_fits": redis_cores <= usable,
        "redis_ceiling_publishes": model.redis_ceiling(usable, spread),
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
        "gateway_cores": model.gateway_cores(demand.writes, demand.deliveries, demand.users),
        "redis_memory_bytes": redis_memory_bytes(model, demand),
    }


# --- the model against runs it was not fitted on ---------------------------------------------

def predicted_cores(model: Model, run: dict[str, Any], step: dict[str, Any]
                    ) -> dict[str, float | None]:
    """The model's CPU (cores) for a measured step: all nodes together, Redis and nginx."""
    writes = step["achieved_per_s"] / frames_per_write(step)
    return {
        "nodes": _node_cores(model, run, step),
        "redis": model.redis_cores(step["published_per_s"], subscribed(run)),
        "nginx": (model.gateway_cores(writes, step["achieved_per_s"], clients(run))
                  if run["args"]["gateway"] else None),
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
    features, cores = node_samples(results.fanout, model.per_connection)
    writes = features[:, 0] + features[:, 1]
    ax.scatter(writes, cores, label="measured (node, step)")
    xs = np.linspace(0, max(writes) * 1.1, 50)
    ax.plot(xs, model.per_write * xs, "--", label="fit: writes only, direct")
    ax.plot(xs, model.per_gateway_write * xs, ":", label="fit: writes only, through nginx")
    ax.set(xlabel="writes/s to clients by the node", ylabel="node CPU beyond pings (cores)",
           title="Node CPU against writes to clients")
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
    per_write = model.per_gateway_write if run["args"]["gateway"] else model.per_write
    return sum(per_write / frames_per_write(step, node)
               * step["achieved_per_s"] * share["members"]
               + model.per_publish * step["published_per_s"] * share["senders"]
               + model.per_envelope * step["published_per_s"] * subscribed(run)
               / run["args"]["nodes"]
               + model.per_connection * clients(run) * share["members"]
               for node, share in _shares(run).items())


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
    nginx = ("not measured" if model.nginx_per_write is None
             else f"{model.nginx_per_write * 1e6:.2f} µs per write relayed, "
                  f"{model.nginx_per_delivery * 1e6:.2f} µs per delivery, "
                  f"{model.nginx_per_connection * 1e6:.2f} µs/s per idle connection")
    return [
        "## Cost model (fitted)", "",
        "| quantity | value |", "|---|---|",
        f"| node CPU per write to a client through nginx | "
        f"{model.per_gateway_write * 1e6:.2f} µs |",
        f"| node CPU per write to a client connected directly | {model.per_write * 1e6:.2f} µs |",
        f"| node CPU per message its clients publish | {model.per_publish * 1e6:.2f} µs |",
        f"| node CPU per envelope received (each subscribed node, each message) | "
        f"{model.per_envelope * 1e6:.2f} µs |",
        f"| node CPU per idle connection (pings, pongs) | {model.per_connection * 1e6:.2f} "
        "µs/s |",
        f"| node CPU per room join (fan-out runs with --churn) | {model.per_join * 1e6:.0f} µs |",
        f"| Redis CPU per room join | {model.redis_per_join * 1e6:.0f} µs |",
        f"| Redis CPU per publish at {REDIS_RATE:,.0f} publishes/s ({model.redis_nodes} "
        f"subscribed nodes; cores grow as publishes^{model.redis_exponent:.2f}) | "
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
