"""Room history: what a joiner sees of what was said before."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from tests.chat_client import ChatClient
from tests.conftest import ClientFactory


async def _send(client, count: int) -> None:
    """Send m1..m<count> at once, then take their echoes (one at a time, a busy client's
    echoes would each wait for its next write tick)."""
    for n in range(1, count + 1):
        await client.say(f"m{n}")
    for n in range(1, count + 1):
        assert (await client.expect("message"))["text"] == f"m{n}"


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


async def _in_room(connect: ClientFactory, node, name: str) -> ChatClient:  # type: ignore[no-untyped-def]
    client = await connect(node)
    await client.auth(name)
    await client.join("general")
    return client


async def _pages_back(client: ChatClient, page: list[dict], more: bool) -> list[dict]:
    """Every older message, paged with `history` until the room keeps none older."""
    messages = list(page)
    while more:
        await client.send(type="history", before=messages[0]["seq"])
        older = await client.expect("history")
        assert older["room"] == "general" and older["messages"], older
        messages = older["messages"] + messages
        more = older["more"]
    return messages


async def test_a_join_carries_at_most_the_reply_bytes_and_the_rest_is_paged(
        make_node, connect: ClientFactory) -> None:
    """Issue 28: room_joined carried the newest 50 messages whatever their size (3-6 MB
    from one 40-byte join). Now at most --history-reply-bytes, the newest first."""
    node = await make_node(history_reply_bytes=4096, history=100, history_window=50,
                           max_text=2000, join_rate=1000.0, join_burst=1000)
    alice = await _in_room(connect, node, "alice")
    for n in range(1, 21):
        await alice.say(f"{n:04d}" + "x" * 996)
    for n in range(1, 21):
        await alice.expect("message")
    bob = await connect(node)
    await bob.auth("bob")
    await bob.send(type="join", room="general")
    frame = await bob.next_frame()
    joined = json.loads(frame.data)
    history = joined["history"]
    assert 1 <= len(history) <= 4 and joined["more"] is True
    assert [m["seq"] for m in history] == list(range(21 - len(history), 21)), "the newest"
    assert len(frame.data.encode()) < 4096 + 1024, "the bytes of the history, and the rest"
    everything = await _pages_back(bob, history, joined["more"])
    assert [m["seq"] for m in everything] == list(range(1, 21))


async def test_one_message_past_the_reply_bytes_still_goes_alone(make_node, connect) -> None:
    node = await make_node(history_reply_bytes=100, max_text=2000)
    alice = await _in_room(connect, node, "alice")
    await alice.say("y" * 1500)
    await alice.expect("message")
    joined = await (await _in_room_raw(connect, node, "bob"))
    assert [m["text"] for m in joined["history"]] == ["y" * 1500] and joined["more"] is False


async def _in_room_raw(connect: ClientFactory, node, name: str):  # type: ignore[no-untyped-def]
    client = await connect(node)
    await client.auth(name)
    return client.join("general")


async def test_a_resume_past_the_reply_bytes_is_recovered_and_paged_to_since(
        make_node, connect: ClientFactory) -> None:
    node = await make_node(history_reply_bytes=3000, max_text=2000)
    alice = await connect(node)
    await alice.auth("alice")
    epoch = (await alice.join("general"))["epoch"]
    await alice.say("before")
    since = (await alice.expect("message"))["seq"]
    for n in range(10):
        await alice.say(f"{n}" + "z" * 999)
    for n in range(10):
        await alice.expect("message")
    back = await connect(node)
    await back.auth("bob")
    resumed = await back.join("general", since=since, epoch=epoch)
    assert resumed["recovered"] is True and resumed["more"] is True
    assert len(resumed["history"]) < 10
    gap = await _pages_back(back, resumed["history"], resumed["more"])
    assert [m["seq"] for m in gap if m["seq"] > since] == list(range(since + 1, since + 11))


async def test_history_requests_are_bounded_and_spend_the_join_allowance(
        make_node, connect: ClientFactory) -> None:
    node = await make_node(join_rate=0.01, join_burst=3)
    alice = await _in_room(connect, node, "alice")  # one of the three
    await _send(alice, 5)
    await alice.send(type="history", before=5, limit=2)
    page = await alice.expect("history")
    assert [m["seq"] for m in page["messages"]] == [3, 4] and page["more"] is True
    assert page["epoch"]
    await alice.send(type="history", before=3)
    assert [m["seq"] for m in (await alice.expect("history"))["messages"]] == [1, 2]
    await alice.send(type="history", before=2)
    await alice.expect_error("rate_limited")


async def test_history_requests_are_validated(connect: ClientFactory, node) -> None:  # type: ignore[no-untyped-def]
    outside = await connect(node)
    await outside.auth("carol")
    await outside.send(type="history", before=5)
    await outside.expect_error("not_in_room")
    await outside.join("general")
    for bad in ({"before": 0}, {"before": "5"}, {"limit": 0}, {"limit": 101}):
        await outside.send(type="history", **bad)
        await outside.expect_error("invalid_format")


async def test_joins_of_one_room_state_share_one_history_read(node, connect: ClientFactory
                                                              ) -> None:  # type: ignore[no-untyped-def]
    """The newest window is read once per room state, not once per join."""
    alice = await _in_room(connect, node, "alice")
    await _send(alice, 3)
    reads = await _history_reads(node)
    for name in ("bob", "carol", "dave"):
        joined = await (await _in_room_raw(connect, node, name))
        assert [m["seq"] for m in joined["history"]] == [1, 2, 3]
    await alice.send(type="join", room="general")  # a re-join: the same state
    await alice.skip_to("room_joined")
    assert await _history_reads(node) == reads + 1, "bob's join read it, the others shared it"
    await alice.say("new")
    await alice.skip_to("message")
    joined = await (await _in_room_raw(connect, node, "erin"))
    assert [m["seq"] for m in joined["history"]] == [1, 2, 3, 4], "a new state: read again"
    assert await _history_reads(node) == reads + 2


async def _history_reads(node) -> float:  # type: ignore[no-untyped-def]
    # Not kept alive: a chat WebSocket opens only as a connection's first request.
    response = await node.get("/metrics", headers={"Connection": "close"})
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if sample.name == "chat_history_reads_total":
                return sample.value
    raise AssertionError("no chat_history_reads_total")
