"""The server API (issue 31) against a real node, on the memory backend and on Redis: each
command's effect as clients see it, keys and scopes, bounds at their edges, and bad input
answered with a machine code, never a 500."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from aiohttp.test_utils import TestClient

from gateway.processes import LOOPBACK, free_port, start_node
from node.app import server_api_app
from node.client.server_api import ServerAPI, ServerAPIError
from node.runtime import NODE
from tests.chat_client import ChatClient
from tests.conftest import REDIS_SHARDS, unlimited_flags
from tests.docs_blocks import ROOT, blocks_run_by
from tests.hostile_json import json_values

PUBLISH_KEY = "publish-key-0123456789"
ADMIN_KEY = "admin-key-0123456789ab"
KEYS = f"publish:{PUBLISH_KEY}, admin:{ADMIN_KEY}"
MAX_BODY = 4096
MAX_TEXT = 1000
BURST = 1000

Api = Callable[..., Awaitable[ServerAPI]]


@pytest.fixture
async def api_node(make_node: Any, aiohttp_client: Any
                   ) -> tuple[TestClient[Any, Any], TestClient[Any, Any]]:
    """A node with its server API: (the node's HTTP client, the API's)."""
    node = await make_node(api_keys=KEYS, api_max_body=MAX_BODY, api_rate=1000.0,
                           api_burst=BURST, max_text=MAX_TEXT)
    return node, await aiohttp_client(server_api_app(node.server.app[NODE]))


@pytest.fixture
async def api(api_node: tuple[TestClient[Any, Any], TestClient[Any, Any]]
              ) -> Callable[[str], ServerAPI]:
    opened: list[ServerAPI] = []

    def make(key: str = ADMIN_KEY) -> ServerAPI:
        opened.append(ServerAPI(str(api_node[1].make_url("")), key))
        return opened[-1]

    yield make
    for client in opened:
        await client.close()


async def _member(api_node: Any, name: str, room: str = "general") -> ChatClient:
    client = ChatClient(await api_node[0].ws_connect("/ws"))
    await client.auth(name)
    await client.join(room)
    return client


async def test_a_published_message_takes_the_rooms_path(api_node, api) -> None:
    alice = await _member(api_node, "alice")
    await alice.say("from alice")
    assert (await alice.expect("message"))["seq"] == 1
    seq = await api(PUBLISH_KEY).publish("general", "from the backend")
    notice = await alice.expect("message")
    assert (notice["seq"], notice["text"], notice["user"], notice["userId"],
            notice["system"]) == (seq, "from the backend", "System", "", True) == (
        2, "from the backend", "System", "", True)
    await alice.say("after")
    assert (await alice.expect("message"))["seq"] == 3, "one order with clients' messages"
    as_bob = await api(PUBLISH_KEY).publish("general", "on bob's behalf", user_id="u-bob",
                                            name="Bob")
    event = await alice.expect("message")
    assert (event["seq"], event["userId"], event["user"]) == (as_bob, "u-bob", "Bob")
    assert "system" not in event
    history = await api().history("general", since=1)
    assert [m["text"] for m in history["messages"]] == [
        "from the backend", "after", "on bob's behalf"]


async def test_a_publish_with_a_client_id_is_stored_once(api_node, api) -> None:
    alice = await _member(api_node, "alice")
    first = await api().publish("general", "once", client_id="job-42")
    again = await api().call("publish", room="general", text="once", clientId="job-42")
    assert again == {"seq": first, "duplicate": True}
    await alice.expect("message")
    assert (await api().history("general"))["seq"] == first


async def test_publish_refuses_what_a_client_could_not_send(api) -> None:
    for fields, code in [({"room": "no-such-room", "text": "x"}, "room_not_found"),
                         ({"room": "bad room", "text": "x"}, "invalid_room"),
                         ({"room": "general", "text": "  "}, "text_required"),
                         ({"room": "general", "text": "x" * (MAX_TEXT + 1)}, "text_too_long"),
                         ({"room": "general", "text": "bell\x07"}, "invalid_text"),
                         ({"room": "general", "text": "x", "userId": "u1"}, "invalid_request"),
                         ({"room": "general", "text": "x", "userId": "u1", "name": "a\tb"},
                          "invalid_name"),
                         ({"room": "general", "text": "x", "colour": "red"}, "invalid_request"),
                         ({"room": "general"}, "invalid_request")]:
        with pytest.raises(ServerAPIError) as refused:
            await api().call("publish", **fields)
        assert refused.value.code == code, fields


async def test_broadcast_answers_each_room(api_node, api) -> None:
    await _member(api_node, "alice", "general")
    await _member(api_node, "bob", "random")
    results = await api().broadcast(["general", "random", "nowhere"], "to all")
    assert results == [{"room": "general", "seq": 1}, {"room": "random", "seq": 1},
                       {"room": "nowhere", "error": results[2]["error"]}]
    assert results[2]["error"]["code"] == "room_not_found"


async def test_presence_stats_rooms_and_info(api_node, api) -> None:
    alice = await _member(api_node, "alice")
    await _member(api_node, "bob")
    presence = await api().presence("general")
    assert sorted((m["name"], m["userId"] == alice.user_id) for m in presence["members"]) == [
        ("alice", True), ("bob", False)]
    assert (await api().presence_stats("general"))["userCount"] == 2
    rooms = await api().rooms()
    assert {"name": "general", "userCount": 2} in rooms["rooms"]
    info = await api().info()
    assert info["node"]["id"] == "test-node" and info["node"]["connections"] == 2
    assert info["node"]["ready"] is True
    assert [node["id"] for node in info["nodes"]] == ["test-node"]  # as of its heartbeat


async def test_keys_and_scopes(api_node, api) -> None:
    url = api_node[1].make_url("/api/info")
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-API-Key": "wrong-key-0123456789"}, {"X-API-Key": ""}):
            async with http.post(url, headers=headers, json={}) as reply:
                assert reply.status == 401
                assert (await reply.json())["error"]["code"] == "unauthorized"
    with pytest.raises(ServerAPIError) as refused:
        await api(PUBLISH_KEY).info()
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    answers = await api(PUBLISH_KEY).batch([{"command": "publish", "room": "general",
                                             "text": "ok"},
                                            {"command": "presence", "room": "general"},
                                            {"command": "batch", "commands": []},
                                            {"room": "general"}])
    assert answers[0] == {"result": {"seq": 1}}
    assert [answer["error"]["code"] for answer in answers[1:]] == [
        "forbidden", "invalid_request", "invalid_request"]


async def test_a_body_is_bounded_in_bytes(api_node) -> None:
    url = api_node[1].make_url("/api/publish")
    headers = {"X-API-Key": ADMIN_KEY}
    body = '{"room":"general","text":"edge"}'
    at_the_edge = body + " " * (MAX_BODY - len(body))  # JSON allows the white space
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=headers, data=at_the_edge) as reply:
            assert reply.status == 200, await reply.text()
        async with http.post(url, headers=headers, data=at_the_edge + " ") as reply:
            assert reply.status == 413
            assert (await reply.json())["error"]["code"] == "body_too_large"


async def test_a_key_has_a_rate(make_node, aiohttp_client) -> None:
    node = await make_node(api_keys=KEYS, api_rate=0.5, api_burst=5)
    served = await aiohttp_client(server_api_app(node.server.app[NODE]))
    async with ServerAPI(str(served.make_url("")), ADMIN_KEY) as admin, \
            ServerAPI(str(served.make_url("")), PUBLISH_KEY) as publisher:
        commands = [{"command": "presence_stats", "room": "general"}] * 5
        assert all("result" in answer for answer in await admin.batch(commands))
        with pytest.raises(ServerAPIError) as refused:
            await admin.info()
        assert (refused.value.status, refused.value.code) == (429, "rate_limited")
        assert await publisher.publish("general", "another key, another bucket") == 1


async def test_calls_are_counted_by_command_and_result(api_node, api) -> None:
    await api().info()
    with pytest.raises(ServerAPIError):
        await api(PUBLISH_KEY).info()
    async with api_node[0].get("/metrics") as reply:
        text = await reply.text()
    assert 'chat_api_calls_total{command="info",result="ok"} 1.0' in text
    assert 'chat_api_calls_total{command="info",result="forbidden"} 1.0' in text


async def test_the_api_is_not_on_the_nodes_public_port(api_node) -> None:
    async with api_node[0].post("/api/publish", headers={"X-API-Key": ADMIN_KEY},
                                json={"room": "general", "text": "x"}) as reply:
        assert reply.status in (404, 405)


COMMANDS = ["publish", "broadcast", "disconnect", "kick", "mute", "delete", "presence",
            "presence_stats", "history", "rooms", "info", "batch", "nope", "..%2F..%2Fadmin"]
FIELDS = {"room": json_values | st.sampled_from(["general", "x" * 65, "nowhere"]),
          "rooms": json_values | st.lists(st.sampled_from(["general", "random", "é"]),
                                          max_size=120),
          "text": json_values, "userId": json_values, "name": json_values,
          "clientId": json_values, "since": json_values, "before": json_values,
          "limit": json_values, "offset": json_values, "seq": json_values,
          "until": json_values | st.floats(), "code": json_values, "reason": json_values,
          "commands": json_values | st.lists(st.fixed_dictionaries(
              {"command": st.sampled_from(COMMANDS)}, optional={"room": json_values}),
              max_size=5)}
bodies = st.one_of(
    st.fixed_dictionaries({}, optional=FIELDS).map(json.dumps),
    json_values.map(json.dumps),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.text(max_size=200),
)


@pytest.fixture(scope="module")
def api_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A node process serving the API on loopback (embedded mode); its base URL."""
    port = free_port()
    node = start_node(tmp_path_factory.mktemp("api-fuzz"), "fuzz", None,
                      [f"--api-listen={LOOPBACK}:{port}", "--api-rate=100000",
                       "--api-burst=100000"], env={"CHAT_API_KEYS": KEYS})
    yield f"http://{LOOPBACK}:{port}"
    node.stop()


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(COMMANDS), body=bodies, key=st.sampled_from(
    [ADMIN_KEY, PUBLISH_KEY, "", "x" * 300]))
def test_hostile_bodies_get_a_code_never_a_500(api_process: str, command: str, body: str,
                                                key: str) -> None:
    """Issue 31: whatever an API caller sends, the answer is JSON with a machine code (4xx,
    or 503 when the chat state is unreachable), never a 500 or a traceback."""
    request = urllib.request.Request(f"{api_process}/api/{command}", data=body.encode(),
                                     headers={"X-API-Key": key}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            status, answer = reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as refused:
        status, answer = refused.code, json.loads(refused.read())
    assert status < 500 or status == 503, (status, answer)
    assert "result" in answer or answer["error"]["code"], answer


@pytest.mark.parametrize("redis_shards", REDIS_SHARDS)
@pytest.mark.timeout(120)
async def test_any_node_drives_the_cluster_and_the_gateway_hides_the_api(
        make_cluster: Any, open_ws: Any, redis_shards: int) -> None:
    """Node processes with Redis (or a Redis Cluster) and nginx: a publish through node1's API
    reaches a member on node2 in the room's order; node2's API sees node1's members; node1's
    API kicks, mutes, deletes for, disconnects and bans a member of node2, who is then
    refused on both; the gateway routes nothing to the API (its paths answer 404 there)."""
    key = "admin-cluster-key-0123456789"
    cluster = make_cluster(nodes=2, redis_shards=redis_shards, api_key=key,
                           node_args=unlimited_flags())
    alice = await open_ws(cluster.node_ws_url(1))
    await alice.auth("alice")
    await alice.join("general")
    bob = await open_ws(cluster.node_ws_url(2))
    bob_token = (await bob.auth("bob"))["token"]
    await bob.join("general")
    await alice.say("first")
    async with ServerAPI(cluster.api_url(1), key) as node1, \
            ServerAPI(cluster.api_url(2), key) as node2:
        seq = await node1.publish("general", "from the backend")
        assert [(e["seq"], e["text"]) for e in (await bob.expect("message"),
                                                 await bob.expect("message"))] == [
            (1, "first"), (seq, "from the backend")]
        names = {m["name"] for m in (await node2.presence("general"))["members"]}
        assert names == {"alice", "bob"}
        assert sorted(node["id"] for node in (await node2.info())["nodes"]) == sorted(
            [(await node1.info())["node"]["id"], (await node2.info())["node"]["id"]])
        await node1.kick("general", bob.user_id)
        assert (await bob.skip_to("room_left"))["reason"] == "kicked", "kicked from node1"
        await bob.join("general")  # not barred: it may come back
        await node1.mute("general", bob.user_id, time.time() + 60)
        await bob.say("muted on node2 by node1")
        await bob.expect_error("muted")
        await node1.delete("general", 1)
        assert (await bob.skip_to("message_deleted"))["seq"] == 1
        assert (await node2.history("general"))["messages"][0]["deleted"] is True
        await node1.call("disconnect", userId=bob.user_id, until=time.time() + 60)
        assert (await bob.expect_close())[0] == 4002, "node2's member, closed from node1"
        for url in (cluster.node_ws_url(1), cluster.node_ws_url(2)):
            again = await open_ws(url)
            await again.send(type="auth", name="bob", userId=bob.user_id, token=bob_token)
            await again.expect_error("banned")
    async with aiohttp.ClientSession() as http:
        for command in ("publish", "info", "batch"):
            async with http.post(f"{cluster.http_url}/api/{command}",
                                 headers={"X-API-Key": key},
                                 json={"room": "general", "text": "x"}) as reply:
                assert reply.status == 404, command


@pytest.mark.timeout(90)
def test_the_documented_calls_run_as_written(make_cluster: Any) -> None:
    """docs/server-api.md's curl commands, as typed, against a node process: each answers
    a result, none an error; and docs/loadtesting.md's run of the backend's Locust users
    ends without a failure."""
    key = "admin-docs-key-0123456789"
    cluster = make_cluster(nodes=1, api_key=key, node_args=unlimited_flags())
    env = {**os.environ, "CHAT_API": cluster.api_url(1), "CHAT_API_KEY": key}
    blocks = blocks_run_by("tests/integration/test_server_api.py")
    calls = [command for block in blocks if block.document == "docs/server-api.md"
             for command, _ in block.commands()]
    assert len(calls) >= 8, calls
    for command in calls:
        answer = json.loads(_run(command, env))
        assert "result" in answer, (command, answer)
        assert "error" not in json.dumps(answer["result"]).replace('"room_not_found"', ""), \
            (command, answer)
    load, = [command for block in blocks if block.document == "docs/loadtesting.md"
             for command, _ in block.commands()]
    summary = _run(load, env, timeout=60)
    assert "publish" in summary, summary


def _run(command: str, env: dict[str, str], timeout: float = 20) -> str:
    """Run a documented command as typed: what it printed, once it succeeded."""
    done = subprocess.run(command, shell=True, executable="/bin/bash", env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout + done.stderr


async def test_a_muted_member_still_reads_and_others_chat(api_node, api) -> None:
    alice = await _member(api_node, "alice")
    mallory = await _member(api_node, "mallory")
    await alice.expect("user_joined")
    await api().mute("general", mallory.user_id, time.time() + 60)
    await mallory.say("spam")
    await mallory.expect_error("muted")
    with pytest.raises(ServerAPIError) as refused:
        await api().publish("general", "on mallory's behalf", user_id=mallory.user_id,
                            name="mallory")
    assert refused.value.code == "muted"
    await alice.say("still here")
    assert (await mallory.expect("message"))["text"] == "still here", "muted, not deaf"
    await api().call("mute", room="general", userId=mallory.user_id, until=0)
    await mallory.say("sorry")
    assert (await alice.skip_to("message"))["text"] == "still here"
    assert (await alice.skip_to("message"))["text"] == "sorry"


async def test_a_disconnected_user_is_closed_and_a_banned_one_kept_out(api_node, api) -> None:
    alice = await _member(api_node, "alice")
    first = ChatClient(await api_node[0].ws_connect("/ws"))
    identity = await first.auth("mallory")
    await first.join("general")
    second = ChatClient(await api_node[0].ws_connect("/ws"))
    await second.resume(identity, "mallory")  # a second tab: both go
    await api().disconnect(identity["userId"], reason="Spam")
    for tab in (first, second):
        assert await tab.expect_close() == (4002, "Spam")
    back = ChatClient(await api_node[0].ws_connect("/ws"))
    await back.resume(identity, "mallory")  # no ban: it may come back
    await back.close()
    until = time.time() + 60
    await api().call("disconnect", userId=identity["userId"], until=until)
    banned = ChatClient(await api_node[0].ws_connect("/ws"))
    await banned.send(type="auth", name="mallory", userId=identity["userId"],
                      token=identity["token"])
    refused = await banned.expect_error("banned")
    assert "Banned until" in refused["message"]
    assert (await banned.expect_close())[0] == 4003
    await alice.say("unbothered")
    assert (await alice.skip_to("message"))["text"] == "unbothered"
    await api().call("disconnect", userId=identity["userId"], until=0)  # the ban lifted
    again = ChatClient(await api_node[0].ws_connect("/ws"))
    assert (await again.resume(identity, "mallory"))["userId"] == identity["userId"]
    await again.close()


async def test_a_kicked_member_leaves_the_room_and_a_barred_one_may_not_rejoin(
        api_node, api) -> None:
    alice = await _member(api_node, "alice")
    mallory = await _member(api_node, "mallory")
    await alice.expect("user_joined")
    await api().kick("general", mallory.user_id, until=time.time() + 60)
    assert await mallory.skip_to("room_left") == {"type": "room_left", "room": "general",
                                                   "reason": "kicked"}
    assert (await alice.skip_to("user_left"))["userId"] == mallory.user_id
    await mallory.send(type="join", room="general")
    refused = await mallory.expect_error("kicked")
    assert "until" in refused["message"]
    assert (await mallory.join("random"))["room"] == "random", "other rooms stay open"
    await api().call("kick", room="general", userId=mallory.user_id, until=0)  # lifted
    assert (await mallory.join("general"))["room"] == "general"


async def test_a_deleted_message_is_a_tombstone_in_history_and_announced_in_order(
        api_node, api) -> None:
    alice = await _member(api_node, "alice")
    bob = await _member(api_node, "bob")
    await alice.expect("user_joined")
    for text in ("keep", "remove me", "after"):
        await bob.send(type="message", text=text, clientId=text.replace(" ", "-"))
    assert [(await alice.expect("message"))["text"] for _ in range(3)] == [
        "keep", "remove me", "after"]
    newcomer = await _member(api_node, "carol")  # caches the room's newest window
    assert [m["text"] for m in (await newcomer.join("general"))["history"]][-2:] == [
        "remove me", "after"]
    assert await api().call("delete", room="general", seq=2) == {"room": "general", "seq": 2}
    assert await alice.skip_to("message_deleted") == {"type": "message_deleted",
                                                      "room": "general", "seq": 2}
    late = await _member(api_node, "dave")  # the room's seq is still 3: the same state
    history = {m["seq"]: m for m in (await late.join("general"))["history"]}
    assert history[2]["deleted"] is True, "no cached window holds the deleted text"
    await api().delete("general", 1)
    await alice.say("next")
    assert (await alice.skip_to("message_deleted"))["seq"] == 1
    assert (await alice.expect("message"))["text"] == "next", "in the room's order"
    stored = {m["seq"]: m for m in (await api().history("general"))["messages"]}
    assert (stored[2]["deleted"], stored[2]["text"], stored[2]["user"]) == (True, "", "bob")
    assert "clientId" not in stored[2] and stored[3]["text"] == "after"
    assert await api().call("delete", room="general", seq=2) == {"room": "general", "seq": 2}
    with pytest.raises(ServerAPIError) as missing:
        await api().call("delete", room="general", seq=99)
    assert (missing.value.status, missing.value.code) == (404, "message_not_found")


@pytest.mark.timeout(60)
async def test_the_api_on_a_unix_socket_is_the_owners_alone(tmp_path: Path) -> None:
    socket_path = tmp_path / "api.sock"
    node = await asyncio.to_thread(start_node, tmp_path, "sock", None,
                                   [f"--api-socket={socket_path}"], env={"CHAT_API_KEYS": KEYS})
    try:
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        async with ServerAPI(f"unix:{socket_path}", ADMIN_KEY) as api:
            assert (await api.info())["node"]["id"] == "sock"
            assert await api.publish("general", "through the socket") == 1
    finally:
        await asyncio.to_thread(node.stop)


async def test_a_ban_ends_at_its_time(api_node, api) -> None:
    first = ChatClient(await api_node[0].ws_connect("/ws"))
    identity = await first.auth("mallory")
    await api().call("disconnect", userId=identity["userId"], until=time.time() + 0.5)
    assert (await first.expect_close())[0] == 4002
    await asyncio.sleep(0.6)  # the ban's time passes (Redis expires the key)
    again = ChatClient(await api_node[0].ws_connect("/ws"))
    assert (await again.resume(identity, "mallory"))["userId"] == identity["userId"]
    await again.close()
