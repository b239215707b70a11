"""`python -m gateway up|render`: the local cluster launcher and the nginx config renderer."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from gateway.cluster import Cluster
from gateway.nginx import GatewayConfig
from gateway.processes import MissingBinary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start Redis, N nodes and nginx on loopback")
    up.add_argument("--nodes", type=int, default=3, help="number of chat nodes (default 3)")
    up.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    up.add_argument("--redis-url", help="use this Redis instead of starting one")
    up.add_argument("--run-dir", type=Path, help="logs and configs (default: a new temp dir)")
    render = commands.add_parser("render", help="print the nginx configuration")
    render.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    render.add_argument("--listen", help="listen address (default 127.0.0.1:PORT)")
    render.add_argument("--upstream", action="append", required=True,
                        help="a node's host:port; repeat for each node")
    render.add_argument("--run-dir", type=Path, default=Path("/tmp/chat-gateway"),
                        help="where nginx keeps its pid, logs and temp files")
    render.add_argument("--workers", type=int, default=1, help="nginx worker processes")
    return parser


def up(args: argparse.Namespace) -> None:
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="chat-cluster-"))
    cluster = Cluster(run_dir, args.nodes, args.port, args.redis_url)
    print(f"starting {args.nodes} nodes (logs in {run_dir}) ...", file=sys.stderr)
    cluster.start()
    print(f"chat cluster up: {cluster.http_url}  WebSocket: {cluster.ws_url}")
    print(f"  redis  {cluster.redis_url}")
    for index in range(1, len(cluster.nodes) + 1):
        print(f"  node{index}  {cluster.node_url(index)}")
    print("Ctrl-C stops everything.", flush=True)
    _wait_for_stop_signal()
    print("stopping ...", file=sys.stderr)
    cluster.stop()
    print("stopped", file=sys.stderr)


def _wait_for_stop_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def render(args: argparse.Namespace) -> None:
    config = GatewayConfig(args.listen or f"127.0.0.1:{args.port}", args.upstream,
                           args.run_dir, workers=args.workers)
    print(config.render(), end="")


def main() -> None:
    args = _parser().parse_args()
    try:
        up(args) if args.command == "up" else render(args)
    except MissingBinary as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
