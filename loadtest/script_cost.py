"""Redis CPU of one publish: the publish script's `usec_per_call`, on a single Redis (PUBLISH)
and on a Redis Cluster node (SPUBLISH, with the failover term), alternated.

    .venv/bin/python -m loadtest.script_cost [--calls 20000] [--rounds 3]

Starts a throwaway redis-server with cluster support, one node serving every slot, and runs
the node's publish script `--calls` times per case and round (50 rooms, 100-character texts,
pipelined), reading Redis's own command statistics: what Redis spends, not what the client
waits.
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import time
from pathlib import Path

import redis

from gateway.processes import Children, start_redis, stop_all
from gateway.redis_cluster import free_cluster_port
from node.backends.redis.broker import PUBLISH_MESSAGE, PublishCall
from node.backends.redis.support import RedisKeys

TEMPLATE = b'{"type":"message","room":"r","user":"u","text":"' + b"x" * 100 + b'","seq":'
ROOMS = 50


def _round(client: redis.Redis, sha: str, command: str, calls: int) -> float:
    keys = RedisKeys("cost")
    client.config_resetstat()
    pipe = client.pipeline(transaction=False)
    deadline = int(time.time() * 1000) + 600_000
    for call in range(calls):
        publish = PublishCall(f"r{call % ROOMS}", TEMPLATE, "e", 0, "", deadline)
        call_keys = publish.keys(keys)
        pipe.evalsha(sha, len(call_keys), *call_keys,
                     *publish.args(keys, command.encode(), 100, 2**18))
    pipe.execute()
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.script_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    children = Children()
    with tempfile.TemporaryDirectory(prefix="chat-script-cost-") as run_dir:
        try:
            server = start_redis(Path(run_dir), free_cluster_port(), children=children,
                                 settings=["cluster-enabled yes"])
            client = redis.Redis(host=server.host, port=server.port)
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                time.sleep(0.05)
            sha = client.script_load(PUBLISH_MESSAGE)
            for number in range(1, args.rounds + 1):
                for command in ("PUBLISH", "SPUBLISH"):
                    cost = _round(client, sha, command, args.calls)
                    print(f"round {number}  {command:8}  {cost:5.2f} µs of Redis CPU a publish")
            client.close()
        finally:
            stop_all(children.stop(), signal.SIGTERM, 10.0)


if __name__ == "__main__":
    main()
