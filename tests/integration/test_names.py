"""Anonymous mode: a display name, and every name that looks like it, is one user's at a time."""

from __future__ import annotations

import asyncio

import pytest

from tests.chat_client import ChatClient


async def _auth_as(connect, name: str) -> tuple[ChatClient, dict]:
    client = await connect()
    await client.send(type="auth", name=name)
    return client, await client.recv()


@pytest.mark.parametrize("look_alike", [
    "alice", "ALICE", "Alice",
    "aIice",  # capital I for l
    " alice ",
])
async def test_a_name_in_use_cannot_be_taken_in_any_look_alike(connect, look_alike: str
                                                               ) -> None:
    alice, _ = await _auth_as(connect, "alice")
    _, event = await _auth_as(connect, look_alike)
    assert (event["type"], event["code"]) == ("error", "name_taken"), event


async def test_a_refused_client_may_pick_another_name(connect) -> None:
    await _auth_as(connect, "bob")
    client, event = await _auth_as(connect, "B0B")
    assert event["code"] == "name_taken"
    assert (await client.auth("robert"))["name"] == "robert"


async def test_the_name_is_free_again_when_its_users_grace_ends(make_node, connect) -> None:
    node = await make_node(presence_grace=0.2)
    first, _ = await _auth_as(lambda: connect(node), "carol")
    await first.close()
    for _ in range(100):  # the grace is a timer: try until it has ended, for at most 5 s
        client, event = await _auth_as(lambda: connect(node), "Carol")
        if event["type"] == "auth_success":
            return
        await client.close()
        await asyncio.sleep(0.05)
    raise AssertionError("the name stayed taken after its user's grace")


async def test_a_dropped_users_name_waits_for_its_resume(make_node, connect) -> None:
    """Issue 28: someone watching for `user_left` took a dropped user's name 1-4 ms later,
    and the user's resume got `name_taken`. The name stays the user's for the grace."""
    node = await make_node(presence_grace=30.0)
    alice = await connect(node)
    identity = await alice.auth("alice")
    await alice.join("general")
    watcher = await connect(node)
    await watcher.auth("mallory")
    await watcher.join("general")
    await alice.close()
    assert (await watcher.skip_to("user_left"))["userId"] == identity["userId"]
    _, taken = await _auth_as(lambda: connect(node), "alice")
    assert (taken["type"], taken["code"]) == ("error", "name_taken"), taken
    back = await connect(node)
    assert (await back.resume(identity, name="alice"))["name"] == "alice"


async def test_the_same_user_may_use_its_name_on_several_connections(connect) -> None:
    _, first = await _auth_as(connect, "dave")
    again = await connect()
    assert (await again.resume(first, name="dave"))["userId"] == first["userId"]


@pytest.mark.parametrize("name", ["\u3164", "\u2800\u2800", "\u115f\u1160", "\u3164 \u2800"])
async def test_names_that_show_nothing_are_invalid(connect, name: str) -> None:
    _, event = await _auth_as(connect, name)
    assert (event["type"], event["code"]) == ("error", "invalid_name"), event


@pytest.mark.parametrize("disguise", [
    "alice\U000e0100",  # a variation selector past U+FE0F: default-ignorable, draws nothing
    "ali\u200dce",  # a zero-width joiner
    "\u1d00lice",  # a small capital A
    "\U0001d400lice",  # a mathematical bold A
    "alice\u0300\u0300",  # marks stacked on a Latin letter, with no composed form
    "bob\u20dd",  # an enclosing circle
    "p\u0430ypal",  # Latin and Cyrillic mixed
    "\u0430lice",  # the same, as alice
    "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth letters: compatibility forms
    "\U000f0001bob",  # a private-use character
])
async def test_a_name_that_could_disguise_itself_is_invalid(connect, disguise: str) -> None:
    _, event = await _auth_as(connect, disguise)
    assert (event["type"], event["code"]) == ("error", "invalid_name"), event


@pytest.mark.parametrize("name", [
    "Jürgen", "José María", "Nguyễn", "Zoë", "O'Brien", "李小龍", "田中さん", "김민준",
    "Иван", "नमस्ते", "مرحبا", "R2-D2", "😀 bob",
])
async def test_names_people_write_are_valid(connect, name: str) -> None:
    _, event = await _auth_as(connect, name)
    assert (event["type"], event["name"]) == ("auth_success", name), event


async def test_a_name_is_stored_composed(connect) -> None:
    _, event = await _auth_as(connect, "Jo\u0301se\u0301")
    assert event["name"] == "J\u00f3s\u00e9"


async def test_the_name_of_users_without_one_is_reserved(connect) -> None:
    _, event = await _auth_as(connect, "anonymous")
    assert event["code"] == "name_taken"
    nameless = await connect()
    await nameless.send(type="auth")
    other = await connect()
    await other.send(type="auth")
    for client in (nameless, other):
        assert (await client.expect("auth_success"))["name"] == "Anonymous"


async def test_presence_events_tell_same_looking_users_apart_by_id(member) -> None:
    alice = await member("alice")
    bob = await member("bob")
    joined = await alice.expect("user_joined")
    assert (joined["user"], joined["userId"]) == ("bob", bob.user_id)
    await bob.say("hi")
    message = await alice.expect("message")
    assert (message["user"], message["userId"]) == ("bob", bob.user_id)


async def test_a_stopping_node_lets_go_at_once_of_names_it_did_not_drain(
        make_cluster, open_ws) -> None:
    """A user that left on its own keeps its name for the grace while its node runs; a node
    that stops lets such names go at once instead of lingering a grace (the users it drains
    keep theirs: they come back on another node within it)."""
    cluster = make_cluster(nodes=2, node_args=["--presence-grace", "60"])
    alice, joined = await _auth_as(lambda: open_ws(cluster.node_ws_url(1)), "alice")
    assert joined["type"] == "auth_success", joined
    await alice.close()
    _, taken = await _auth_as(lambda: open_ws(cluster.node_ws_url(2)), "alice")
    assert (taken["type"], taken["code"]) == ("error", "name_taken"), taken
    assert await asyncio.to_thread(cluster.nodes[0].stop) == 0
    _, free = await _auth_as(lambda: open_ws(cluster.node_ws_url(2)), "alice")
    assert free["type"] == "auth_success", free
