"""Webhooks (issue 32) from node processes to a real HTTP receiver on loopback that verifies
every signature with the `standardwebhooks` library: every room event, in each room's order,
at least once (ids make it exactly once), through a receiver outage and the death of the
node delivering, on one Redis and on a Redis Cluster; per-endpoint filters; dead letters
and their replay by the operator's command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from gateway.cluster import Cluster
from node.client.server_api import ServerAPI
from node.hooks.signing import Signer
from tests.chat_client import ChatClient
from tests.docs_blocks import ROOT, blocks_run_by
from gateway.tokens import new_hook_secret
from tests.hook_receiver import Receiver, started

API_KEY = "admin-key-0123456789ab"
DOCUMENTED_ENDPOINT = "http://127.0.0.1:8090/events"  # docs/hooks.md's


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await started(new_hook_secret())
    yield receiver
    await receiver.stop()


async def _cluster(make_cluster: Callable[..., Cluster], receiver: Receiver, nodes: int,
                   *args: str, **options: Any) -> Cluster:
    """Nodes that send every event to the receiver's /events (started off the loop, which
    serves the receiver meanwhile)."""
    return await asyncio.to_thread(
        make_cluster, nodes=nodes, node_env={"CHAT_HOOK_SECRET": receiver.secret},
        node_args=[f"--webhook-url={receiver.url('events')}", "--webhook-max-backoff=1",
                   "--presence-grace=0", *args], **options)


async def _member(open_ws: Callable[..., Any], url: str, name: str, room: str) -> ChatClient:
    client = await open_ws(url)
    await client.auth(name)
    await client.join(room)
    return client


def _by_room(events: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    rooms: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        rooms[event["room"]].append(event)
    return rooms


def _in_order(events: list[dict[str, Any]]) -> None:
    """A room's messages come in seq order, its membership changes in presence order."""
    seqs = [e["data"]["seq"] for e in events if e["type"] == "message"]
    versions = [e["data"]["presence"] for e in events if "presence" in e["data"]]
    assert seqs == sorted(seqs) and versions == sorted(versions), (seqs, versions)


@pytest.fixture(params=["redis", "redis-cluster"])
def shards(request: pytest.FixtureRequest) -> int:
    return 3 if request.param == "redis-cluster" else 0


async def test_every_room_event_comes_signed_in_the_rooms_order(
        make_cluster, open_ws, receiver, shards: int) -> None:
    cluster = await _cluster(make_cluster, receiver, 2,
                             f"--webhook-url={receiver.url('events-messages')}#message",
                             redis_shards=shards, api_key=API_KEY)
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", "lobby")
    bob = await _member(open_ws, cluster.node_ws_url(2), "bob", "lobby")
    for text in ("one", "two", "three"):
        await alice.say(text)
    seen = [await bob.skip_to("message") for _ in range(3)]
    api = ServerAPI(cluster.api_url(2), API_KEY)
    try:
        await api.delete("lobby", 2)
        await api.kick("lobby", bob.user_id, until=time.time() + 60)
        await api.disconnect(alice.user_id, until=time.time() + 60)
    finally:
        await api.close()
    expected = ["room_occupied", "member_joined", "member_joined", "message", "message",
                "message", "message_deleted", "user_banned", "member_left", "member_left",
                "room_vacated"]
    await receiver.wait_for(lambda: len(receiver.unique()) >= len(expected) + 1, timeout=20)
    events = receiver.unique()
    lobby = _by_room(events)["lobby"]
    assert sorted(e["type"] for e in lobby) == sorted(expected)
    _in_order(lobby)
    assert [e["type"] for e in lobby][:2] == ["member_joined", "room_occupied"]
    assert [e["type"] for e in lobby][-2:] == ["member_left", "room_vacated"]
    messages = [e for e in lobby if e["type"] == "message"]
    assert [(m["data"]["seq"], m["data"]["text"], m["data"]["userId"]) for m in messages] == [
        (s["seq"], s["text"], alice.user_id) for s in seen]
    assert next(e for e in lobby if e["type"] == "message_deleted")["data"] == {"seq": 2}
    banned = [e for e in events if e["type"] == "user_banned"]
    assert {(e["room"], e["data"]["userId"]) for e in banned} == {
        ("lobby", bob.user_id), (None, alice.user_id)}
    joined = next(e for e in lobby if e["type"] == "member_joined")
    assert set(joined["data"]) == {"userId", "name", "userCount", "presence"}
    assert joined["timestamp"].endswith("Z")
    await receiver.wait_for(lambda: len(receiver.unique("events-messages")) == 3, timeout=10)
    assert {e["type"] for e in receiver.unique("events-messages")} == {"message"}
    assert receiver.forged == 0


async def test_a_receiver_down_30_s_then_a_node_killed_mid_delivery_loses_nothing(
        make_cluster, open_ws, receiver) -> None:
    """Three rooms talk while the receiver is down for 30 s; when it is back (slow), the node
    delivering is killed mid-way: the other one takes its partitions and every event comes,
    at least once, each room's in order."""
    cluster = await _cluster(make_cluster, receiver, 2, "--node-ttl=2")
    rooms = ["alpha", "beta", "gamma"]
    senders = [await _member(open_ws, cluster.node_ws_url(2), f"s-{r}", r) for r in rooms]
    await receiver.stop()
    sent: dict[str, list[int]] = {room: [] for room in rooms}
    ends = time.monotonic() + 30
    while time.monotonic() < ends:
        for room, sender in zip(rooms, senders, strict=True):
            await sender.send(type="message", text=f"at {time.monotonic():.1f}")
            sent[room].append((await sender.skip_to("message"))["seq"])
        await asyncio.sleep(0.5)
    receiver.delay = 0.02
    await receiver.start()
    await receiver.wait_for(lambda: len(receiver.events) >= 10, timeout=15)
    holder = _lease_holder(cluster)
    killed_after = len(receiver.events)
    cluster.nodes[holder - 1].kill()  # SIGKILL, mid-delivery
    total = sum(map(len, sent.values()))
    await receiver.wait_for(lambda: sum(e["type"] == "message" for e in receiver.unique())
                            >= total, timeout=60)
    by_room = _by_room(receiver.unique())
    for room in rooms:
        _in_order(by_room[room])
        assert [e["data"]["seq"] for e in by_room[room] if e["type"] == "message"] == sent[room]
    print(f"{total} messages; {len(receiver.events)} webhooks taken, {len(receiver.unique())} "
          f"unique; node{holder} killed after {killed_after} taken")


def _lease_holder(cluster: Cluster) -> int:
    """The index of a node that delivers webhooks now (holds a partition's lease)."""
    client = redis.Redis.from_url(cluster.redis_url or "")
    try:
        holders = {client.get(key) for key in client.scan_iter("chat:{@cluster}:hook-lease:*")}
    finally:
        client.close()
    names = {holder.decode() for holder in holders if holder}
    assert names, "no node holds a lease"
    return int(sorted(names)[0].removeprefix("node"))


def _webhooks_command(cluster: Cluster, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "node", "webhooks", *args],
                         env={**os.environ, "CHAT_REDIS_URL": cluster.redis_url or ""},
                         capture_output=True, text=True, timeout=30, check=True)
    return run.stdout


async def test_too_old_events_become_dead_letters_that_the_operator_replays(
        make_cluster, open_ws, receiver) -> None:
    """A room whose events the receiver refuses holds back no other room; past the max age
    its events are dead letters, listed and replayed (with their ids) by the operator's
    command. docs/hooks.md's commands run as written, for its endpoint (nothing listens
    there: its messages die too)."""
    cluster = await _cluster(make_cluster, receiver, 1, "--webhook-max-age=2",
                             f"--webhook-url={DOCUMENTED_ENDPOINT}#message")
    receiver.refuse = lambda event: event["room"] == "doomed"
    doomed = await _member(open_ws, cluster.node_ws_url(1), "dora", "doomed")
    await doomed.say("lost?")
    general = await _member(open_ws, cluster.node_ws_url(1), "gus", "general")
    await general.say("still flowing")  # one room's failures hold back no other room
    await receiver.wait_for(lambda: any(e["type"] == "message" for e in receiver.unique()),
                            timeout=10)
    endpoint = f"--endpoint={receiver.url('events')}"
    deadline = time.monotonic() + 20
    while len(dead := _webhooks_command(cluster, "dead", endpoint).splitlines()) < 3:
        assert time.monotonic() < deadline, dead
        await asyncio.sleep(0.5)

    letters = [json.loads(line) for line in dead]
    assert [d["body"]["type"] for d in letters] == ["member_joined", "room_occupied", "message"]
    assert all(d["room"] == "doomed" and "not taken in 2 s" in d["reason"] for d in letters)
    receiver.refuse = lambda event: False
    assert _webhooks_command(cluster, "replay", endpoint).strip() == "replayed 3"
    wanted = {d["webhookId"] for d in letters}
    await receiver.wait_for(lambda: wanted <= {e["id"] for e in receiver.events}, timeout=20)
    assert _webhooks_command(cluster, "dead", endpoint) == ""
    metrics = await asyncio.to_thread(_metrics, cluster)
    assert 'result="dead"} 3.0' in metrics and "chat_webhook_oldest_seconds" in metrics
    _documented_commands(cluster)


def _documented_commands(cluster: Cluster) -> None:
    """docs/hooks.md's commands, as written: a secret, then the documented endpoint's dead
    letters (the two messages) and their replay."""
    secret, dead, replay = [command for block in blocks_run_by(
        "tests/integration/test_webhooks.py") for command, _ in block.commands()]
    env = {**os.environ, "CHAT_REDIS_URL": cluster.redis_url or ""}
    made = subprocess.run(f'{secret} && echo "$CHAT_HOOK_SECRET"', shell=True,
                          executable="/bin/bash", capture_output=True, text=True, check=True)
    Signer(made.stdout.strip())  # a valid secret
    deadline = time.monotonic() + 20
    while len(lines := _shell(dead, env).splitlines()) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.5)
    assert {json.loads(line)["body"]["data"]["text"] for line in lines} == {
        "lost?", "still flowing"}
    assert _shell(replay, env).strip() == "replayed 2"


def _shell(command: str, env: dict[str, str]) -> str:
    return subprocess.run(command, shell=True, executable="/bin/bash", env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=True).stdout


def _metrics(cluster: Cluster) -> str:

    with urllib.request.urlopen(cluster.node_url(1) + "/metrics", timeout=10) as response:
        return response.read().decode()
