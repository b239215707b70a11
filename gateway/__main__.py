"""`python -m gateway up|rolling-restart|status|render|serve`: the local cluster, its gateway
configuration, and the gateway of a container deployment."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from gateway.cluster import DEFAULT_REDIS_MAXMEMORY, STATE_FILE, SUPERVISE_EVERY, Cluster
from gateway.nginx import GatewayConfig
from gateway.processes import LOOPBACK, MissingBinary, Stopped, http_ok, stop_on_signals
from gateway.redis_cluster import MIN_SHARDS
from gateway.rolling import ClusterState, rolling_restart
from gateway.serve import Gateway, replicas, serve
from gateway.tokens import new_secret


def _default_run_dir(port: int) -> Path:
    """Where `up` keeps logs and state, so that `rolling-restart --port` finds it."""
    return Path(f"/tmp/chat-cluster-{port}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start Redis, N nodes and nginx on loopback")
    up.add_argument("--nodes", type=int, default=3, help="number of chat nodes (default 3)")
    up.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    up.add_argument("--redis-url", help="use this Redis instead of starting one")
    up.add_argument("--redis-cluster", action="store_true",
                    help="start a Redis Cluster (--shards primaries with a replica each) "
                    "instead of one Redis; with --redis-url, that URL is a cluster's seed node")
    up.add_argument("--redis-maxmemory", default=DEFAULT_REDIS_MAXMEMORY,
                    help="memory of the Redis it starts (default 512mb); past it, writes are "
                    "refused (noeviction) and clients get `unavailable`")
    up.add_argument("--shards", type=int, default=3,
                    help=f"primaries of the Redis Cluster (default and least {MIN_SHARDS})")
    up.add_argument("--run-dir", type=Path,
                    help="logs, configs and state (default /tmp/chat-cluster-PORT)")
    _add_client_limits(up)
    rolling = commands.add_parser(
        "rolling-restart", help="drain and restart every node of a running `up`, one at a time")
    rolling.add_argument("--port", type=int, default=8080, help="gateway port of that `up`")
    rolling.add_argument("--run-dir", type=Path, help="its run dir (default from --port)")
    state = commands.add_parser("status", help="the gateway and nodes of a running `up`")
    state.add_argument("--port", type=int, default=8080, help="gateway port of that `up`")
    state.add_argument("--run-dir", type=Path, help="its run dir (default from --port)")
    render = commands.add_parser("render", help="print the nginx configuration")
    render.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    render.add_argument("--listen", help="listen address (default 127.0.0.1:PORT)")
    render.add_argument("--upstream", action="append", required=True,
                        help="a node's host:port; repeat for each node")
    render.add_argument("--run-dir", type=Path, default=Path("/tmp/chat-gateway"),
                        help="where nginx keeps its pid, logs and temp files")
    _add_limits(render)
    serve = commands.add_parser(
        "serve", help="run nginx in front of every replica of a service (in a container), "
        "following the replicas as they come and go")
    serve.add_argument("--service", required=True,
                       help="host:port whose name resolves to every replica (compose: node:8000)")
    serve.add_argument("--listen", default="0.0.0.0:8080", help="listen address")
    serve.add_argument("--run-dir", type=Path, default=Path("/tmp/chat-gateway"),
                       help="where nginx keeps its configuration, pid and temp files")
    serve.add_argument("--resolve-every", type=float, default=2.0,
                       help="seconds between lookups of the service's replicas")
    _add_limits(serve)
    return parser


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """The rendered configuration's tunables, shared by `render` and `serve`."""
    defaults = GatewayConfig("", [], Path())
    parser.add_argument("--workers", default=defaults.workers,
                        help="nginx worker processes (default auto: one per core)")
    parser.add_argument("--max-head", type=int, default=defaults.max_head,
                        help="the nodes' --max-head: nginx's header buffers follow it")
    _add_client_limits(parser)


def _add_client_limits(parser: argparse.ArgumentParser) -> None:
    """What one client address may hold and ask of the gateway (`up` takes these too)."""
    defaults = GatewayConfig("", [], Path())
    parser.add_argument("--ws-per-address", type=int, default=defaults.ws_per_address,
                        help="WebSockets one client address may hold (limit_conn)")
    parser.add_argument("--api-rate", type=int, default=defaults.api_rate,
                        help="other requests per second per client address (limit_req)")
    parser.add_argument("--api-burst", type=int, default=defaults.api_burst,
                        help="requests per client address allowed at once over the rate")


def _gateway_config(args: argparse.Namespace, listen: str, upstreams: list[str],
                    **options: Any) -> GatewayConfig:
    return GatewayConfig(listen, upstreams, args.run_dir, workers=args.workers,
                         max_head=args.max_head, ws_per_address=args.ws_per_address,
                         api_rate=args.api_rate, api_burst=args.api_burst, **options)


def up(args: argparse.Namespace) -> None:
    run_dir = args.run_dir or _default_run_dir(args.port)
    if args.shards < MIN_SHARDS:
        sys.exit(f"--shards must be at least {MIN_SHARDS} (Redis Cluster's minimum)")
    cluster = Cluster(run_dir, args.nodes, args.port, args.redis_url,
                      args.shards if args.redis_cluster else 0, admin_token=new_secret(),
                      gateway_limits={"ws_per_address": args.ws_per_address,
                                      "api_rate": args.api_rate, "api_burst": args.api_burst},
                      redis_maxmemory=args.redis_maxmemory)
    stopping = cluster.children.stopping
    stop_on_signals(stopping)  # SIGHUP too: closing the terminal
    print(f"starting {args.nodes} nodes (logs in {run_dir}) ...", file=sys.stderr, flush=True)
    try:
        cluster.start()
    except Stopped:
        sys.exit("stopped before the cluster was up; every process it had started is stopped")
    except RuntimeError as error:  # a process that exited or never became ready
        sys.exit(f"the cluster did not start: {error}")
    cluster.write_state()
    _print_banner(cluster)
    while not stopping.wait(SUPERVISE_EVERY):
        cluster.supervise()
    print("stopping ...", file=sys.stderr, flush=True)
    cluster.stop()
    print("stopped", file=sys.stderr)


def _print_banner(cluster: Cluster) -> None:
    print(f"chat cluster up: {cluster.http_url}  WebSocket: {cluster.ws_url}")
    if cluster.redis is not None:
        print(f"  redis  redis://{LOOPBACK}:{cluster.redis.port}/0  (its password: "
              f"{cluster.redis_config})")
    if cluster.redis_cluster is not None:
        ports = " ".join(str(node.port) for node in cluster.redis_cluster.nodes)
        print(f"  redis cluster  {cluster.redis_shards} shards with a replica each, "
              f"{LOOPBACK} ports {ports}  (password: {cluster.redis_config})")
    for index in range(1, len(cluster.nodes) + 1):
        print(f"  node{index}  {cluster.node_url(index)}")
    where = f"--port {cluster.gateway_port}" + (
        "" if cluster.run_dir == _default_run_dir(cluster.gateway_port)
        else f" --run-dir {cluster.run_dir}")
    print(f"Ctrl-C stops everything; `.venv/bin/python -m gateway status {where}` shows it, "
          f"`.venv/bin/python -m gateway rolling-restart {where}` restarts the nodes.",
          flush=True)


def _running(args: argparse.Namespace) -> ClusterState:
    """The state of the `up` on `--port`, or exit saying that no cluster runs there."""
    state_path = (args.run_dir or _default_run_dir(args.port)) / STATE_FILE
    if not state_path.exists():
        sys.exit(f"no cluster running on port {args.port} (no state at {state_path})")
    state = ClusterState.load(state_path)
    if not http_ok(f"{state.gateway}/gateway-health"):
        sys.exit(f"no cluster running on port {args.port}: its gateway does not answer "
                 f"(the state at {state_path} is left from a launcher that was killed)")
    return state


def rolling(args: argparse.Namespace) -> None:
    state = _running(args)
    try:
        rolling_restart(state, say=lambda line: print(line, flush=True))
    except (RuntimeError, TimeoutError) as error:
        sys.exit(f"rolling restart failed: {error}")


def status(args: argparse.Namespace) -> None:
    state = _running(args)
    print(f"gateway  {state.gateway}  up")
    for url, ready, body in state.node_status():
        readiness = "ready" if ready == 200 else "not ready" if ready else "down"
        print(f"{body.get('node', '?'):>8}  {url}  {readiness}  "
              f"{body.get('connections', '-')} clients")


def render(args: argparse.Namespace) -> None:
    config = _gateway_config(args, args.listen or f"127.0.0.1:{args.port}", args.upstream)
    print(config.render(), end="")


def serve_gateway(args: argparse.Namespace) -> None:
    host, _, port = args.service.rpartition(":")
    stopping = threading.Event()
    stop_on_signals(stopping, (signal.SIGINT, signal.SIGTERM))
    # Logs to the container's stderr; file descriptors up to the container's hard limit.
    gateway = Gateway(lambda upstreams: _gateway_config(
        args, args.listen, upstreams, error_log="stderr"), args.run_dir)
    sys.exit(serve(gateway, lambda: replicas(host, int(port)), args.resolve_every, stopping))


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    commands = {"up": up, "rolling-restart": rolling, "status": status, "render": render,
                "serve": serve_gateway}
    try:
        commands[args.command](args)
    except MissingBinary as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
