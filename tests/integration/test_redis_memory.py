"""Redis bounded by configuration: the launcher's Redis has a memory limit and refuses writes
past it (noeviction) instead of evicting history or presence; a node whose publish is refused
tells the sender `unavailable`, and nothing of the message is stored or delivered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis.asyncio as redis

from gateway.cluster import Cluster
from node.backends.redis.support import RedisKeys


async def test_a_full_redis_refuses_a_message_whole_and_the_sender_is_told(
        make_cluster, open_ws) -> None:
    cluster: Cluster = make_cluster(nodes=1)
    assert cluster.redis is not None
    client = redis.Redis(port=cluster.redis.port, password=cluster.redis_password)
    try:
        limits = await client.config_get("maxmemory*")
        assert limits["maxmemory-policy"] == "noeviction" and int(limits["maxmemory"]) > 0
        alice = await open_ws(cluster.node_ws_url(1))
        await alice.auth("alice")
        await alice.join("full")
        used = (await client.info("memory"))["used_memory"]
        await client.config_set("maxmemory", used + 100_000)
        stored = 0
        for _ in range(100):  # about 12 of 9,000 characters fill 100 kB
            await alice.say("x" * 9000)
            reply = await alice.skip_to_any("message", "error")
            if reply["type"] == "error":
                break
            stored = reply["seq"]
        assert reply["code"] == "unavailable", reply
        keys = RedisKeys("chat")
        assert int(await client.get(keys.seq("full"))) == stored  # nothing half-written
        newest = await client.zrange(keys.history("full"), -1, -1, withscores=True)
        assert int(newest[0][1]) == stored
        await client.config_set("maxmemory", "512mb")
        await alice.say("room again")
        after = await alice.skip_to("message")  # the refused message never arrives
        assert (after["seq"], after["text"]) == (stored + 1, "room again")
    finally:
        await client.aclose()


def test_the_memory_tool_measures_rooms_members_and_messages(tmp_path: Path) -> None:
    out = tmp_path / "redis-memory.json"
    done = subprocess.run([sys.executable, "-m", "loadtest.redis_memory", "--rooms", "200",
                           "--messages", "10", "--text", "2000", "--json", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["benchmark"] == "redis_memory" and figures["text"] == 2000
    assert 2000 < figures["bytes per message"] < 4000  # the text, its fields, the entry
    assert figures["bytes per room"] > figures["bytes per member"] > 0
    # a key with its seq, held for the window (2,000 of them: fewer drown in Redis's noise)
    assert 50 < figures["bytes per clientId"] < 1000
