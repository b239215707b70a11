"""Exactly-once sends (issue 31): a message sent with a `clientId` is stored and delivered
once however often its sender sends it again, across reconnects and nodes, on one Redis
and on a Redis Cluster; real node processes, killed under the sender."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest

from tests.chat_client import ChatClient
from tests.conftest import REDIS_SHARDS, unlimited_flags

ITERATIONS = 6


async def _in_room(open_ws: Any, url: str, room: str, identity: dict[str, Any] | None,
                   name: str = "sender") -> tuple[ChatClient, dict[str, Any]]:
    client = await open_ws(url)
    identity = await (client.auth(name) if identity is None else client.resume(identity, name))
    await client.join(room)
    return client, identity


@pytest.mark.parametrize("redis_shards", REDIS_SHARDS)
@pytest.mark.timeout(240)
async def test_a_resend_after_the_senders_node_died_mid_send_is_stored_once(
        make_cluster: Any, open_ws: Any, redis_shards: int) -> None:
    """The sender's node is killed (SIGKILL) right after the message left the sender: it
    may or may not have been stored. The sender resumes on another node and sends it again
    with the same clientId: the watcher gets it exactly once, and history holds it once."""
    cluster = make_cluster(nodes=3, redis_shards=redis_shards,
                           node_args=[*unlimited_flags(), "--presence-grace", "0"])
    room = f"once-{uuid.uuid4().hex[:6]}"
    watcher, _ = await _in_room(open_ws, cluster.node_ws_url(3), room, None, "watcher")
    identity: dict[str, Any] | None = None
    acknowledged: dict[str, int] = {}
    duplicates = 0
    for iteration in range(ITERATIONS):
        victim, refuge = (1, 2) if iteration % 2 == 0 else (2, 1)
        sender, identity = await _in_room(open_ws, cluster.node_ws_url(victim), room, identity)
        text, client_id = f"m{iteration}", f"c{iteration}"
        await sender.send(type="message", text=text, clientId=client_id)
        port = cluster.nodes[victim - 1].port
        await asyncio.to_thread(cluster.nodes[victim - 1].kill)
        again, _ = await _in_room(open_ws, cluster.node_ws_url(refuge), room, identity)
        await again.send(type="message", text=text, clientId=client_id)
        ack = await again.skip_to("message_sent")
        assert ack["clientId"] == client_id
        acknowledged[text] = ack["seq"]
        duplicates += bool(ack.get("duplicate"))
        await again.close()
        cluster.nodes[victim - 1] = await asyncio.to_thread(cluster.start_node, victim, port)
    delivered: Counter[str] = Counter()
    seqs: dict[str, int] = {}
    async with asyncio.timeout(30):
        while set(delivered) < set(acknowledged):
            event = await watcher.skip_to("message")
            delivered[event["text"]] += 1
            seqs[event["text"]] = event["seq"]
    await watcher.send(type="history", limit=100)
    stored = Counter(message["text"] for message in (await watcher.skip_to("history"))["messages"])
    print(f"{duplicates} of {ITERATIONS} resends found their message stored before the kill")
    assert all(count == 1 for count in delivered.values()), delivered
    assert stored == Counter(acknowledged.keys()), "each stored once"
    assert seqs == acknowledged, "the resend was answered with the stored message's seq"
