"""`python -m node webhooks`: an operator's look at an endpoint's dead letters (webhooks it
never took within --webhook-max-age), and their replay once the endpoint is back.

    python -m node webhooks dead --endpoint URL [--count N]    one JSON line each
    python -m node webhooks replay --endpoint URL [--count N]  queued again, oldest first

It reads the cluster's Redis from --redis-url / CHAT_REDIS_URL (and --redis-cluster,
--redis-prefix, as the nodes have them). A replayed webhook keeps its id, goes to that
endpoint alone, and is retried for another --webhook-max-age."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from node.backends.event_queue import Recorded
from node.backends.redis.event_queue import Marks, RedisEventQueue
from node.backends.redis.support import RedisKeys, connect
from node.hooks.endpoints import parse_endpoint


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m node webhooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("dead", "replay"))
    parser.add_argument("--endpoint", required=True, help="the endpoint's URL, as configured")
    parser.add_argument("--count", type=int, default=100, help="how many (oldest first)")
    parser.add_argument("--redis-url", default=os.environ.get("CHAT_REDIS_URL"))
    parser.add_argument("--redis-cluster", action="store_true",
                        default=os.environ.get("CHAT_REDIS_CLUSTER", "") in ("1", "true"))
    parser.add_argument("--redis-prefix", default=os.environ.get("CHAT_REDIS_PREFIX", "chat"))
    return parser


async def _run(args: argparse.Namespace) -> None:
    redis = connect(args.redis_url, args.redis_cluster)
    keys = RedisKeys(args.redis_prefix)
    queue = RedisEventQueue(redis, keys, "webhooks-cli", Marks(redis, keys, Recorded()))
    endpoint = parse_endpoint(args.endpoint).key
    try:
        if args.action == "dead":
            for dead in await queue.dead(endpoint, args.count):
                print(json.dumps({"deadId": dead.id, "room": dead.room,
                                  "webhookId": dead.webhook_id, "reason": dead.reason,
                                  "body": json.loads(dead.body)}))
        else:
            print(f"replayed {await queue.replay(endpoint, args.count)}")
    finally:
        await redis.aclose()


def main(argv: Sequence[str]) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.redis_url:
        parser.error("give --redis-url (or CHAT_REDIS_URL): the dead letters are in Redis")
    if args.count <= 0:
        parser.error("--count must be positive")
    try:
        parse_endpoint(args.endpoint)
    except ValueError as error:
        parser.error(str(error))
    asyncio.run(_run(args))
    sys.stdout.flush()
