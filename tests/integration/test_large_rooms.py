"""Large rooms: past --presence-limit members a room lists none, and its members get the
member count (`user_count`, coalesced) instead of every join and leave."""

from __future__ import annotations

import math
import time

import pytest

from tests.chat_client import ChatClient
from tests.conftest import unlimited_flags

LIMIT = 3


@pytest.fixture
async def node(make_node):  # type: ignore[no-untyped-def]
    return await make_node(presence_limit=LIMIT, presence_interval=0.2)


async def _joined(connect, name: str, room: str = "general", **node) -> tuple[ChatClient, dict]:
    client = await connect(**node)
    await client.auth(name)
    return client, await client.join(room)


async def test_a_room_at_the_limit_lists_its_members(connect) -> None:
    clients = [await _joined(connect, f"u{n}") for n in range(LIMIT)]
    _, joined = clients[-1]
    assert sorted(joined["users"]) == ["u0", "u1", "u2"] and joined["userCount"] == LIMIT
    assert "large" not in joined


async def test_past_the_limit_a_joiner_gets_the_count_and_no_list(connect) -> None:
    for n in range(LIMIT):
        await _joined(connect, f"u{n}")
    _, joined = await _joined(connect, "late")
    assert (joined["users"], joined["members"], joined["userCount"], joined["large"]) == (
        [], [], LIMIT + 1, True)


async def test_the_change_past_the_limit_reaches_listed_members_as_a_count(connect) -> None:
    first, _ = await _joined(connect, "u0")
    for n in range(1, LIMIT):
        await _joined(connect, f"u{n}")
        assert (await first.expect("user_joined"))["userCount"] == n + 1
    _, late = await _joined(connect, "late")
    count = await first.expect("user_count")
    assert count == {"type": "user_count", "room": "general", "userCount": LIMIT + 1,
                     "presence": late["presence"]}


async def test_counted_members_get_the_newest_count_not_each_change(make_node, connect
                                                                   ) -> None:
    """Six changes: the first at once, then at most one update per interval, the last one
    carrying the newest count."""
    interval = 3.0
    slow = {"http": await make_node(presence_limit=LIMIT, presence_interval=interval)}
    for n in range(LIMIT + 1):
        counted, _ = await _joined(connect, f"u{n}", **slow)
    started = time.monotonic()
    newcomers = [await _joined(connect, f"new{n}", **slow) for n in range(5)]
    await newcomers[0][0].close()
    leave_version = newcomers[-1][1]["presence"] + 1
    updates = []
    while not updates or updates[-1]["presence"] < leave_version:
        event = await counted.recv()
        assert event["type"] == "user_count", f"a counted member got {event}"
        updates.append(event)
    # However slowly the six changes came, no more than the leading update and one per
    # interval since (two when they all fit in one interval, as they do here)
    assert len(updates) <= 1 + math.ceil((time.monotonic() - started) / interval)
    assert [u["presence"] for u in updates] == sorted({u["presence"] for u in updates})
    assert (updates[-1]["userCount"], updates[-1]["presence"]) == (LIMIT + 5, leave_version)


async def test_a_counted_member_that_joins_again_in_a_small_room_is_listed_again(
        connect) -> None:
    others = [await _joined(connect, f"u{n}") for n in range(LIMIT)]
    counted, joined = await _joined(connect, "late")
    assert joined["large"]
    await others[0][0].close()
    await counted.skip_to("user_count")  # LIMIT members: small again
    again = await counted.join("general")
    assert sorted(again["users"]) == ["late", "u1", "u2"] and "large" not in again
    await others[1][0].close()
    left = await counted.skip_to("user_left")
    assert (left["user"], left["userCount"]) == ("u1", 2)


async def test_a_small_room_beside_a_large_one_is_unaffected(connect) -> None:
    for n in range(LIMIT + 1):
        await _joined(connect, f"u{n}")
    small, _ = await _joined(connect, "alice", room="side")
    _, joined = await _joined(connect, "bob", room="side")
    assert sorted(joined["users"]) == ["alice", "bob"] and "large" not in joined
    assert (await small.expect("user_joined"))["user"] == "bob"


async def test_counts_cross_nodes(make_cluster, open_ws) -> None:
    """Members on one node are counted for changes made on another, over Redis."""
    cluster = make_cluster(nodes=2, node_args=[*unlimited_flags(), f"--presence-limit={LIMIT}",
                                               "--presence-interval=0.2"])
    clients = []
    for n in range(LIMIT + 1):
        client = await open_ws(cluster.node_ws_url(1 + n % 2))
        await client.auth(f"u{n}")
        joined = await client.join("general")
        clients.append(client)
    assert joined["large"] and joined["userCount"] == LIMIT + 1
    late = await open_ws(cluster.node_ws_url(2))
    await late.auth("late")
    await late.join("general")
    on_node1 = clients[0]
    count = await on_node1.skip_to("user_count")
    while count["userCount"] != LIMIT + 2:
        count = await on_node1.expect("user_count")
    await clients[1].close()  # on node 2
    assert (await on_node1.expect("user_count"))["userCount"] == LIMIT + 1
