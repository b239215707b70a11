"""Room history: what a joiner sees of what was said before."""

from __future__ import annotations

from tests.conftest import ClientFactory


async def _send(client, count: int) -> None:
    for n in range(1, count + 1):
        await client.say(f"m{n}")
        await client.expect("message")


async def test_joiner_gets_the_50_newest_of_60_oldest_first(member, connect: ClientFactory) -> None:
    alice = await member("alice")
    await _send(alice, 60)
    bob = await connect()
    await bob.auth("bob")
    joined = await bob.join("general")
    assert [m["seq"] for m in joined["history"]] == list(range(11, 61))
    assert [m["text"] for m in joined["history"]] == [f"m{n}" for n in range(11, 61)]
    assert joined["seq"] == 60
    first = joined["history"][0]
    assert first["type"] == "message" and first["user"] == "alice" and first["room"] == "general"


async def test_only_the_configured_history_is_kept(make_node, connect: ClientFactory) -> None:
    node = await make_node(history=100, history_window=100)
    alice = await connect(node)
    await alice.auth("alice")
    await alice.join("general")
    await _send(alice, 150)
    bob = await connect(node)
    await bob.auth("bob")
    joined = await bob.join("general")
    assert [m["seq"] for m in joined["history"]] == list(range(51, 151))
    assert joined["seq"] == 150


async def test_history_is_per_room(member, connect: ClientFactory) -> None:
    alice = await member("alice", "general")
    await _send(alice, 3)
    bob = await connect()
    await bob.auth("bob")
    joined = await bob.join("random")
    assert joined["history"] == [] and joined["seq"] == 0


async def test_messages_after_join_are_not_repeated_from_history(member) -> None:
    alice = await member("alice")
    await _send(alice, 2)
    bob = await member("bob")
    await alice.say("third")
    event = await bob.expect("message")
    assert (event["seq"], event["text"]) == (3, "third")
