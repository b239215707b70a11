"""Presence held by two nodes: a member leaves when the last node holding it lets go."""

from __future__ import annotations

import pytest

from tests.integration.test_rooms import _user


@pytest.fixture
def backend() -> str:
    """Two nodes share presence only through Redis."""
    return "redis"


async def test_a_user_on_two_nodes_stays_until_both_leave(make_node, connect) -> None:
    here, there = await make_node(node_id="node-a"), await make_node(node_id="node-b")
    first = await connect(here)
    identity = await first.auth("alice")
    await first.join()
    bob = await _user(connect, here, "bob")
    await bob.join()
    second = await connect(there)
    await second.resume(identity)
    assert (await second.join())["userCount"] == 2
    await first.close()
    await bob.say("alice is still on node b")
    assert (await bob.expect("message"))["text"] == "alice is still on node b"
    await second.close()
    left = await bob.expect("user_left")
    assert (left["user"], left["userCount"]) == ("alice", 1)
