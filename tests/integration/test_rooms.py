"""Rooms are bounded: fixed rooms always exist, created ones are limited and expire, the
directory is paged, and a member is present while any of its connections is in a room."""

from __future__ import annotations

import asyncio

import pytest

from node.chat.protocol import MAX_OFFSET

from tests.chat_client import ChatClient


async def _user(connect, node, name: str) -> ChatClient:
    client = await connect(node)
    await client.auth(name)
    return client


async def test_the_fixed_rooms_are_listed_before_anyone_joins(make_node, connect) -> None:
    node = await make_node(rooms="lobby,help")
    client = await connect(node)
    await client.send(type="list_rooms")
    names = [r["name"] for r in (await client.expect("room_list"))["rooms"]]
    # with Redis, the directory also has the fixed rooms of the test's default node
    assert {"help", "lobby"} <= set(names) and names == sorted(names)


async def test_the_directory_is_paged_in_name_order(node, connect) -> None:
    for n in range(1, 5):
        await (await _user(connect, node, f"u{n}")).join(f"r{n}")
    client = await connect(node)
    await client.send(type="list_rooms", offset=0, limit=2)
    first = await client.expect("room_list")
    assert ([r["name"] for r in first["rooms"]], first["total"], first["next"]) == (
        ["general", "r1"], 6, 2)
    await client.send(type="list_rooms", offset=4, limit=2)
    last = await client.expect("room_list")
    assert ([r["name"] for r in last["rooms"]], last["next"]) == (["r4", "random"], None)
    await client.send(type="list_rooms", limit=101)
    await client.expect_error("invalid_format")
    body = await (await node.get("/api/rooms?offset=1&limit=3")).json()
    assert (body["rooms"], body["total"], body["next"]) == (["r1", "r2", "r3"], 6, 4)
    assert (await node.get("/api/rooms?limit=0")).status == 400


async def test_an_offset_past_any_directory_is_refused_at_its_bound(node, connect) -> None:
    client = await _user(connect, node, "pager")
    await client.send(type="list_rooms", offset=MAX_OFFSET)
    assert (await client.expect("room_list"))["rooms"] == []
    await client.send(type="list_rooms", offset=MAX_OFFSET + 1)
    await client.expect_error("invalid_format")
    edge = await node.get(f"/api/rooms?offset={MAX_OFFSET}")
    assert edge.status == 200 and (await edge.json())["rooms"] == []
    for offset in (MAX_OFFSET + 1, 2**63, -1, "x"):
        refused = await node.get(f"/api/rooms?offset={offset}")
        assert refused.status == 400 and (await refused.json())["error"] == "invalid_format"


async def test_rooms_created_by_joining_stop_at_the_cluster_limit(make_node, connect) -> None:
    node = await make_node(rooms="general", max_rooms=2)
    for n, room in enumerate(("a", "b")):
        await (await _user(connect, node, f"u{n}")).join(room)
    late = await _user(connect, node, "late")
    await late.send(type="join", room="c")
    await late.expect_error("room_limit")
    assert await late.join("a")  # an existing room still takes members
    assert await late.join("general")  # and so does a fixed one


async def test_fresh_identities_do_not_reset_an_addresss_allowance_of_rooms(
        make_node, connect) -> None:
    node = await make_node(address_rooms_per_hour=2)
    for n in range(2):  # a new anonymous user each time, from the same address
        await (await _user(connect, node, f"churn{n}")).join(f"made{n}")
    late = await _user(connect, node, "churn-late")
    await late.send(type="join", room="made-late")
    error = await late.expect_error("room_limit")
    assert "your network" in error["message"]
    assert await late.join("made0")  # joining rooms that exist costs nothing


async def test_one_user_may_create_only_so_many_rooms(make_node, connect) -> None:
    node = await make_node(user_rooms_per_hour=2)
    alice = await _user(connect, node, "alice")
    await alice.join("one")
    await alice.join("two")
    await alice.send(type="join", room="three")
    await alice.expect_error("room_limit")
    bob = await _user(connect, node, "bob")
    assert await bob.join("three")  # another user's allowance is its own


async def _say_and_leave(client: ChatClient, room: str, text: str) -> None:
    await client.join(room)
    await client.say(text)
    await client.expect("message")
    await client.send(type="leave")
    await client.expect("room_left")


async def test_an_emptied_room_expires_with_its_history(make_node, connect) -> None:
    node = await make_node(room_ttl=0.3)
    alice = await _user(connect, node, "alice")
    await _say_and_leave(alice, "brief", "remember me")
    async with asyncio.timeout(5):
        while "brief" in (await (await node.get("/api/rooms")).json())["rooms"]:
            await asyncio.sleep(0.05)
    joined = await alice.join("brief")
    assert joined["history"] == [] and joined["seq"] == 0


async def test_a_room_rejoined_before_its_ttl_keeps_its_history(make_node, connect) -> None:
    node = await make_node(room_ttl=60)
    alice = await _user(connect, node, "alice")
    await _say_and_leave(alice, "kept", "still here")
    joined = await alice.join("kept")
    assert [m["text"] for m in joined["history"]] == ["still here"]


async def test_a_user_on_two_connections_stays_until_the_last_leaves(make_node, connect) -> None:
    node = await make_node()
    first = await connect(node)
    identity = await first.auth("alice")
    bob = await _user(connect, node, "bob")
    await bob.join()
    await first.join()
    assert (await bob.expect("user_joined"))["userCount"] == 2
    second = await connect(node)
    await second.resume(identity)
    joined = await second.join()
    assert joined["userCount"] == 2  # the same user: no second entry, no user_joined
    await first.send(type="leave")
    await first.expect("room_left")
    await bob.say("still there?")
    assert (await bob.expect("message"))["text"] == "still there?"  # no user_left before it
    rooms = await (await node.get("/api/rooms")).json()
    assert {d["name"]: d["userCount"] for d in rooms["details"]}["general"] == 2
    await second.close()
    left = await bob.expect("user_left")
    assert (left["user"], left["userCount"]) == ("alice", 1)


@pytest.mark.parametrize("token", ["é" * 32, "\u0000" * 5, "x" * 10_000])
async def test_a_token_of_any_characters_is_invalid_not_an_error(connect, token: str) -> None:
    client = await connect()
    await client.send(type="auth", name="mallory", userId="someone", token=token)
    await client.expect_error("invalid_token")


async def test_json_nested_too_deep_is_invalid_format(connect) -> None:
    client = await connect()
    await client.ws.send_str('{"type":"ping","x":' + "[" * 5000 + "]" * 5000 + "}")
    await client.expect_error("invalid_format")
    await client.send(type="ping")
    await client.expect("pong")

