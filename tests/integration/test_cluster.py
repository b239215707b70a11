"""Three real node processes, a real redis-server and nginx behave like one server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

import redis.asyncio as redis

from gateway.cluster import Cluster
from gateway.nginx import GatewayConfig
from gateway.processes import check_nginx_config
from node.backends.envelope import close
from node.backends.redis.support import RedisKeys
from node.chat.protocol import ChatMessage, message_template
from tests.chat_client import ChatClient, send_concurrently, settle_joins
from tests.conftest import REDIS_BACKENDS, REDIS_SHARDS, unlimited_flags


@pytest.fixture(scope="module", params=REDIS_BACKENDS)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    """One cluster shared by the tests of this module, on one Redis and on a Redis Cluster
    of 3 shards; each test uses rooms of its own, and names that an earlier test's users
    held (so no grace keeps a name for its dropped user)."""
    started = Cluster(Path(tmp_path_factory.mktemp("cluster")), 3,
                      node_args=[*unlimited_flags(), "--presence-grace", "0"],
                      redis_shards=3 if request.param == "redis-cluster" else 0)
    started.start()
    yield started
    started.stop()


ONE_REDIS = pytest.mark.parametrize("cluster", ["redis"], indirect=True)


@pytest.fixture
def room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


async def _member(open_ws, url: str, name: str, room: str) -> ChatClient:
    client = await open_ws(url)
    await client.auth(name)
    await client.join(room)
    return client


async def test_members_on_different_nodes_and_the_gateway_share_a_room(
    cluster: Cluster, open_ws, http: aiohttp.ClientSession, room: str
) -> None:
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
    bob = await _member(open_ws, cluster.node_ws_url(2), "bob", room)
    assert (await alice.expect("user_joined"))["userCount"] == 2
    carol = await open_ws(cluster.ws_url)
    await carol.auth("carol")
    joined = await carol.join(room)
    assert joined["userCount"] == 3 and sorted(joined["users"]) == ["alice", "bob", "carol"]
    for client in (alice, bob):
        assert (await client.expect("user_joined"))["userCount"] == 3

    clients = {"alice": alice, "bob": bob, "carol": carol}
    for name, client in clients.items():
        await client.say(f"from {name}")
    for client in clients.values():
        events = [await client.expect("message") for _ in range(3)]
        assert [e["seq"] for e in events] == [1, 2, 3]
        assert sorted(e["text"] for e in events) == ["from alice", "from bob", "from carol"]
    await alice.say("marker")  # nothing arrives twice: the next message is the marker
    for client in clients.values():
        assert (await client.expect("message"))["text"] == "marker"

    await carol.send(type="list_rooms")
    listed = {r["name"]: r["userCount"] for r in (await carol.expect("room_list"))["rooms"]}
    assert listed[room] == 3
    urls = [cluster.node_url(i) for i in (1, 2, 3)] + [cluster.http_url]
    for url in urls:
        async with http.get(f"{url}/api/rooms") as response:
            details = {d["name"]: d["userCount"] for d in (await response.json())["details"]}
        assert details[room] == 3, url
        assert details == {name: listed[name] for name in details}


async def test_concurrent_senders_on_three_nodes_see_one_order(
    cluster: Cluster, open_ws, room: str
) -> None:
    members = [await _member(open_ws, cluster.node_ws_url(i), f"user{i}", room) for i in (1, 2, 3)]
    await settle_joins(members)
    per_sender = 30
    total = per_sender * len(members)
    seen = await send_concurrently(members, per_sender)
    assert [e["seq"] for e in seen[0]] == list(range(1, total + 1))
    ids = [[e["id"] for e in events] for events in seen]
    assert ids[0] == ids[1] == ids[2]
    assert len(set(ids[0])) == total


async def test_a_newcomer_on_another_node_gets_the_50_newest(
    cluster: Cluster, open_ws, room: str
) -> None:
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
    for n in range(1, 61):
        await alice.say(f"m{n}")
    for n in range(1, 61):  # taken after: one by one, each echo would wait for a write tick
        assert (await alice.expect("message"))["text"] == f"m{n}"
    newcomer = await open_ws(cluster.node_ws_url(3))
    await newcomer.auth("newcomer")
    joined = await newcomer.join(room)
    assert [m["seq"] for m in joined["history"]] == list(range(11, 61))
    assert [m["text"] for m in joined["history"]] == [f"m{n}" for n in range(11, 61)]


@ONE_REDIS  # talks to the Redis directly; cluster mode: test_cluster_mode.py
async def test_nodes_subscribe_only_to_rooms_with_local_members(
    cluster: Cluster, open_ws, room: str
) -> None:
    assert cluster.redis_url is not None
    channel = RedisKeys("chat").channel(room)
    client = redis.Redis.from_url(cluster.redis_url)
    try:
        async def subscribers() -> int:
            return int(dict(await client.pubsub_numsub(channel))[channel.encode()])

        assert await subscribers() == 0
        alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
        assert await subscribers() == 1
        bob = await _member(open_ws, cluster.node_ws_url(2), "bob", room)
        assert await subscribers() == 2
        await bob.send(type="leave")
        await bob.expect("room_left")
        assert await subscribers() == 1
        await alice.close()
        await _eventually(lambda: subscribers(), 0)
    finally:
        await client.aclose()


@ONE_REDIS  # talks to the Redis directly; cluster mode: test_cluster_mode.py
async def test_delivery_resumes_after_subscriber_connections_are_killed(
    cluster: Cluster, open_ws, room: str
) -> None:
    assert cluster.redis_url is not None
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
    bob = await _member(open_ws, cluster.node_ws_url(2), "bob", room)
    await alice.expect("user_joined")
    client = redis.Redis.from_url(cluster.redis_url)
    try:
        assert await client.client_kill_filter(_type="pubsub") >= 2
    finally:
        await client.aclose()
    for n in range(1, 21):
        await bob.say(f"m{n}")
    for member in (alice, bob):
        events = [await member.expect("message") for _ in range(20)]
        assert [e["seq"] for e in events] == list(range(1, 21))


@ONE_REDIS  # talks to the Redis directly; cluster mode: test_cluster_mode.py
async def test_a_lost_publish_is_repaired_from_history(cluster: Cluster, open_ws, room: str
                                                       ) -> None:
    assert cluster.redis_url is not None
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
    await alice.say("first")
    assert (await alice.expect("message"))["seq"] == 1
    client = redis.Redis.from_url(cluster.redis_url)
    try:  # seqs 2 and 3 reach history but their envelopes never reach any node
        for text in ("lost two", "lost three"):
            seq = await client.incr(RedisKeys("chat").seq(room))
            draft = ChatMessage(room=room, user="ghost", user_id="g", text=text,
                                timestamp="2026-01-01T00:00:00.000Z", id=f"lost{seq}")
            await client.zadd(RedisKeys("chat").history(room),
                              {close((message_template(draft),), seq): seq})
    finally:
        await client.aclose()
    await alice.say("fourth")
    events = [await alice.expect("message") for _ in range(3)]
    assert [(e["seq"], e["text"]) for e in events] == [
        (2, "lost two"), (3, "lost three"), (4, "fourth")]


@ONE_REDIS  # rewinds Redis by hand, as a failover that lost the newest writes would
async def test_a_history_that_lost_delivered_messages_numbers_on_and_says_so(
    cluster: Cluster, open_ws, room: str
) -> None:
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
    bob = await _member(open_ws, cluster.node_ws_url(2), "bob", room)
    await alice.expect("user_joined")
    for n in (1, 2, 3):
        await bob.say(f"m{n}")
        for member in (alice, bob):
            assert (await member.expect("message"))["seq"] == n
    assert cluster.redis_url is not None
    client = redis.Redis.from_url(cluster.redis_url)
    try:  # the promoted replica never got seqs 2 and 3
        old_epoch = (await client.get(RedisKeys("chat").epoch(room))).decode()
        await client.set(RedisKeys("chat").seq(room), 1)
        await client.zremrangebyscore(RedisKeys("chat").history(room), 2, 3)
    finally:
        await client.aclose()
    await bob.say("after")
    for member in (alice, bob):  # not seq 2 again, which every node would drop as seen
        reset = await member.expect("history_reset")  # told first: 2 and 3 exist nowhere now
        assert reset["seq"] == 3 and reset["epoch"] != old_epoch, reset
        event = await member.expect("message")
        assert (event["seq"], event["text"]) == (4, "after")
    late = await open_ws(cluster.node_ws_url(2))
    await late.auth("dave")
    for since in (1, 3, 5):  # told of the fork, then on from the base if it had 1..3
        await late.send(type="join", room=room, since=since, epoch=old_epoch)
        assert await late.recv() == {"type": "history_reset", "room": room,
                                     "epoch": reset["epoch"], "seq": 3}
        resumed = await late.recv()
        assert resumed["type"] == "room_joined" and resumed["epoch"] == reset["epoch"]
        assert resumed["recovered"] is (since >= 3), "2 and 3 are gone"
        assert [(m["seq"], m["text"]) for m in resumed["history"]] == [(4, "after")]


@pytest.mark.parametrize("redis_shards", REDIS_SHARDS)
async def test_a_killed_node_leaves_presence_within_15_seconds(
    make_cluster, open_ws, http: aiohttp.ClientSession, room: str, redis_shards: int
) -> None:
    cluster = make_cluster(nodes=2, redis_shards=redis_shards)
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
    bob = await _member(open_ws, cluster.node_ws_url(2), "bob", room)
    await alice.expect("user_joined")
    impostor = await open_ws(cluster.node_ws_url(1))
    await impostor.send(type="auth", name="B0b")
    await impostor.expect_error("name_taken")  # held by a user on the other node
    cluster.nodes[1].kill()
    left = await alice.expect("user_left", timeout=15)
    assert left == {"type": "user_left", "user": "bob", "userId": bob.user_id, "room": room,
                    "userCount": 1, "presence": left["presence"]}
    assert (await impostor.auth("B0b"))["name"] == "B0b", "a dead node's names are freed"
    async with http.get(f"{cluster.node_url(1)}/api/rooms") as response:
        details = {d["name"]: d["userCount"] for d in (await response.json())["details"]}
    assert details[room] == 1
    for n in range(4):  # the gateway retries the dead node's failed handshakes elsewhere
        client = await open_ws(cluster.ws_url)
        assert (await client.auth(f"late{n}"))["node"] == "node1"


async def test_nodes_ride_out_a_redis_restart(
    make_cluster, open_ws, http: aiohttp.ClientSession, room: str
) -> None:
    cluster = make_cluster(nodes=2)
    alice = await _member(open_ws, cluster.node_ws_url(1), "alice", room)
    bob = await open_ws(cluster.node_ws_url(2))
    impostor = await open_ws(cluster.node_ws_url(2))  # before `http` pools a connection there
    await bob.auth("bob")
    epoch = (await bob.join(room))["epoch"]
    await alice.expect("user_joined")
    await alice.say("before")
    for client in (alice, bob):
        assert (await client.expect("message"))["seq"] == 1
    assert cluster.redis is not None
    cluster.redis.stop()

    for index in (1, 2):
        await _eventually(lambda i=index: _status(http, cluster.node_url(i) + "/readyz"), 503)
    async with http.get(f"{cluster.node_url(1)}/api/status") as response:
        assert (await response.json())["broker"] == "unavailable"
    await alice.say("while redis is down")
    await alice.expect_error("unavailable")

    cluster.restart_redis()
    for index in (1, 2):
        await _eventually(lambda i=index: _status(http, cluster.node_url(i) + "/readyz"), 200)
    await impostor.send(type="auth", name="ALICE")
    await impostor.expect_error("name_taken")  # the nodes wrote their names back
    await alice.say("after the restart")
    for client in (alice, bob):  # told that the history starts again, then seq 1 again
        assert (await client.expect("history_reset"))["seq"] == 0
        message = await client.expect("message")
        assert (message["seq"], message["text"]) == (1, "after the restart")
    async with http.get(f"{cluster.node_url(2)}/api/rooms") as response:
        details = {d["name"]: d["userCount"] for d in (await response.json())["details"]}
    assert details[room] == 2, "presence is re-announced after Redis lost it"
    rejoined = await bob.join(room, since=1, epoch=epoch)
    assert rejoined["recovered"] is False and rejoined["epoch"] != epoch, "history was lost"


def test_the_rendered_gateway_config_passes_nginx_t(tmp_path: Path) -> None:
    config = GatewayConfig("127.0.0.1:18080", ["127.0.0.1:18001", "127.0.0.1:18002"], tmp_path)
    config.prepare_run_dir()
    checked = check_nginx_config(tmp_path, config.render())
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as response:
        return response.status


async def _eventually(probe, expected: object, timeout: float = 10.0) -> None:
    """Poll an async probe until it returns `expected` (state that has no event to await)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await probe()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"still {value}, not {expected}"
        await asyncio.sleep(0.05)


async def test_the_gateway_reaches_the_nodes_over_their_unix_sockets(cluster: Cluster) -> None:
    config = (cluster.run_dir / "nginx.conf").read_text()
    for index in (1, 2, 3):
        path = cluster.node_socket(index)
        assert f"server unix:{path} max_fails=0;" in config
        assert path.stat().st_mode & 0o777 == 0o666  # nginx's workers may be another user
        connector = aiohttp.UnixConnector(path=str(path), force_close=True)  # a WebSocket
        # must be the first request of its connection
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get("http://node/api/status") as response:
                assert (await response.json())["node"] == f"node{index}"
            async with http.ws_connect("http://node/ws") as ws:
                await ws.send_json({"type": "auth", "name": "unix"})
                assert (await ws.receive_json(timeout=5))["type"] == "auth_success"
