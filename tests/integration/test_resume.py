"""Joining with `since`: a client that comes back gets exactly what it missed, or is told."""

from __future__ import annotations

import pytest

from tests.conftest import ClientFactory


async def _room_with(connect: ClientFactory, count: int, room: str = "general"):
    alice = await connect()
    await alice.auth("alice")
    joined = await alice.join(room)
    await _say_all(alice, range(1, count + 1))
    return alice, joined["epoch"]


async def _say_all(client, numbers: range) -> None:
    """Say m<n> for each n at once, then take the echoes (one by one, a busy client's echo
    would each wait for its write tick)."""
    for n in numbers:
        await client.say(f"m{n}")
    for n in numbers:
        assert (await client.expect("message"))["text"] == f"m{n}"


async def _rejoin(connect: ClientFactory, **join) -> dict:
    bob = await connect()
    await bob.auth("bob")
    return await bob.join("general", **join)


async def test_a_plain_join_names_the_epoch_and_says_nothing_of_recovery(connect) -> None:
    _, epoch = await _room_with(connect, 1)
    joined = await _rejoin(connect)
    assert joined["epoch"] == epoch and len(epoch) >= 16
    assert "recovered" not in joined


async def test_since_returns_every_retained_message_after_it(connect) -> None:
    _, epoch = await _room_with(connect, 70)
    joined = await _rejoin(connect, since=5, epoch=epoch)
    assert joined["recovered"] is True
    assert [m["seq"] for m in joined["history"]] == list(range(6, 71)), "more than the 50 window"
    assert joined["seq"] == 70


async def test_since_at_the_last_seq_recovers_an_empty_gap(connect) -> None:
    _, epoch = await _room_with(connect, 3)
    joined = await _rejoin(connect, since=3, epoch=epoch)
    assert (joined["recovered"], joined["history"]) == (True, [])


async def test_a_gap_past_the_retained_history_is_not_recovered(make_node, connect) -> None:
    node = await make_node(history=20, history_window=10)
    alice = await connect(node)
    await alice.auth("alice")
    epoch = (await alice.join("general"))["epoch"]
    await _say_all(alice, range(1, 31))  # seqs 11..30 retained
    bob = await connect(node)
    await bob.auth("bob")
    edge = await bob.join("general", since=10, epoch=epoch)
    assert edge["recovered"] is True and edge["history"][0]["seq"] == 11
    carol = await connect(node)
    await carol.auth("carol")
    lost = await carol.join("general", since=9, epoch=epoch)
    assert lost["recovered"] is False
    assert [m["seq"] for m in lost["history"]] == list(range(21, 31)), "the newest window"


@pytest.mark.parametrize("join", [{"since": 2, "epoch": "another-incarnation"},
                                  {"since": 99}])
async def test_another_epoch_or_a_future_seq_is_not_recovered(connect, join: dict) -> None:
    await _room_with(connect, 4)
    joined = await _rejoin(connect, **join)
    assert joined["recovered"] is False
    assert [m["seq"] for m in joined["history"]] == [1, 2, 3, 4]


@pytest.mark.parametrize("since", [-1, "3", 1.5])
async def test_since_must_be_a_non_negative_integer(connect, since: object) -> None:
    client = await connect()
    await client.auth()
    await client.send(type="join", room="general", since=since)
    await client.expect_error("invalid_format")
