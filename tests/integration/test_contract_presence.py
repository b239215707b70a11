"""The presence contract (node.backends.presence.Presence), run against every implementation: room
membership announced in the room's presence order, the directory, and display names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from node.backends.broker import Broker
from node.backends.memory.broker import MemoryBroker
from node.backends.memory.presence import MemoryPresence
from node.backends.presence import Member, Presence, RoomLimit, RoomPolicy
from node.backends.redis.broker import RedisBroker
from node.backends.redis.presence import RedisPresence
from node.backends.redis.support import Client
from node.chat.protocol import presence_templates
from tests.broker_events import Recorder
from tests.conftest import REDIS_BACKENDS, redis_endpoint

LISTED = 20
POLICY = RoomPolicy(("general",), max_rooms=2, rooms_per_hour=10, ttl=60, listed=LISTED,
                    address_rooms_per_hour=1)
ALICE, BOB = Member("u-alice", "alice"), Member("u-bob", "bob")
ADDRESS = "203.0.113.1"


def _announcements(room: str, member: Member) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    return presence_templates(room, member.id, member.name)


@dataclass
class Backend:
    presence: Presence
    broker: Broker
    events: Recorder

    async def heard(self, count: int) -> list[tuple[dict[str, Any], str, int]]:
        """The first `count` announcements: (event, excluded session, presence version)."""
        return [(json.loads(p.payload), p.exclude, p.presence)
                for p in await self.events.until(count)]


@pytest.fixture(params=["memory", *REDIS_BACKENDS])
async def backend(request: pytest.FixtureRequest,
                  redis_client: Callable[[str, bool], Client]) -> AsyncIterator[Backend]:
    events = Recorder()
    broker: Broker
    presence: Presence
    if request.param == "memory":
        memory = MemoryBroker(capacity=10, capacity_bytes=2**20)
        broker = memory
        presence = MemoryPresence(POLICY, _announcements, memory.deliver, memory.drop_room)
    else:
        client = redis_client(*redis_endpoint(request, request.param))
        prefix = request.getfixturevalue("redis_prefix")
        broker = RedisBroker(client, prefix, "node-a", 10, 2**20)
        presence = RedisPresence(client, prefix, "node-a", 10, POLICY, _announcements)
    try:  # closed whatever fails: an open connection would hang the loop's close
        await broker.start(events)
        await presence.start()
        for room in ("general", "made"):
            await broker.subscribe(room)
        yield Backend(presence, broker, events)
    finally:
        await presence.close()
        await broker.close()


async def test_a_join_is_announced_to_all_but_the_joiner_with_the_snapshot_version(
        backend: Backend) -> None:
    joined = await backend.presence.join("general", ALICE, exclude="session-1", address=ADDRESS)
    assert joined.added and joined.roster.members == [ALICE]
    [(event, exclude, version)] = await backend.heard(1)
    assert event == {"type": "user_joined", "user": "alice", "userId": "u-alice",
                     "room": "general", "userCount": 1, "presence": version}
    assert (exclude, version) == ("session-1", joined.roster.version)


async def test_a_member_already_there_is_not_announced_again(backend: Backend) -> None:
    await backend.presence.join("general", ALICE, exclude="session-1", address=ADDRESS)
    again = await backend.presence.join("general", ALICE, exclude="session-2", address=ADDRESS)
    assert not again.added and again.roster.members == [ALICE]
    await backend.presence.join("general", BOB, exclude="session-3", address=ADDRESS)
    heard = await backend.heard(2)
    assert [event["user"] for event, _, _ in heard] == ["alice", "bob"]


async def test_a_leave_is_announced_with_the_next_version_and_only_once(
        backend: Backend) -> None:
    for member in (ALICE, BOB):
        await backend.presence.join("general", member, exclude="", address=ADDRESS)
    assert await backend.presence.leave("general", ALICE)
    assert not await backend.presence.leave("general", ALICE)
    await backend.presence.join("general", ALICE, exclude="", address=ADDRESS)  # a marker after the leave
    heard = await backend.heard(4)
    assert [(e["type"], e["user"], e["userCount"]) for e, _, _ in heard] == [
        ("user_joined", "alice", 1), ("user_joined", "bob", 2), ("user_left", "alice", 1),
        ("user_joined", "alice", 2)]
    versions = [version for _, _, version in heard]
    assert versions == list(range(versions[0], versions[0] + 4))
    roster = await backend.presence.roster("general")
    assert roster.version == versions[-1] and sorted(m.name for m in roster.members) == [
        "alice", "bob"]


async def test_concurrent_changes_replayed_in_version_order_give_the_roster(
        backend: Backend) -> None:
    members = [Member(f"u{n}", f"user{n}") for n in range(20)]
    await asyncio.gather(*(backend.presence.join("general", m, exclude="", address=ADDRESS) for m in members))
    await asyncio.gather(*(backend.presence.leave("general", m) for m in members[::2]))
    view: set[str] = set()
    heard = await backend.heard(30)
    for event, _, _ in sorted(heard, key=lambda h: h[2]):
        (view.add if event["type"] == "user_joined" else view.discard)(event["userId"])
        assert event["userCount"] == len(view)
    assert [h[2] for h in heard] == sorted(h[2] for h in heard), "published in version order"
    roster = await backend.presence.roster("general")
    assert view == {m.id for m in roster.members} == {m.id for m in members[1::2]}


async def test_a_roster_lists_members_up_to_the_limit_and_past_it_only_counts_them(
        backend: Backend) -> None:
    members = [Member(f"u{n}", f"user{n}") for n in range(LISTED + 1)]
    for member in members[:-1]:
        joined = await backend.presence.join("general", member, exclude="", address=ADDRESS)
    assert len(joined.roster.members) == joined.roster.count == LISTED
    assert not joined.roster.large
    joined = await backend.presence.join("general", members[-1], exclude="", address=ADDRESS)
    assert (joined.roster.members, joined.roster.count, joined.roster.large) == (
        [], LISTED + 1, True)
    assert (await backend.presence.roster("general")).members == []
    heard = await backend.heard(LISTED + 1)
    assert heard[-1][0]["userCount"] == LISTED + 1, "every change is still announced"
    await backend.presence.leave("general", members[0])
    roster = await backend.presence.roster("general")
    assert {m.id for m in roster.members} == {m.id for m in members[1:]}
    assert roster.count == LISTED and not roster.large


async def test_joining_creates_rooms_up_to_the_limit_and_the_directory_lists_them(
        backend: Backend) -> None:
    await backend.presence.join("made", ALICE, exclude="", address="203.0.113.10")
    await backend.presence.join("second", ALICE, exclude="", address="203.0.113.11")
    with pytest.raises(RoomLimit, match="maximum of rooms"):
        await backend.presence.join("third", BOB, exclude="", address="203.0.113.12")
    page = await backend.presence.rooms(0, 10)
    assert [(r.name, r.user_count) for r in page.rooms] == [
        ("general", 0), ("made", 1), ("second", 1)]
    assert page.total == 3
    for room, exists in [("general", True), ("made", True), ("third", False), ("gen", False)]:
        assert await backend.presence.room_exists(room) is exists, room


async def test_fresh_users_of_one_address_share_its_allowance_of_rooms(
        backend: Backend) -> None:
    await backend.presence.join("made", ALICE, exclude="", address=ADDRESS)
    with pytest.raises(RoomLimit, match="your network has created too many rooms"):
        await backend.presence.join("second", BOB, exclude="", address=ADDRESS)
    await backend.presence.join("made", BOB, exclude="", address=ADDRESS)  # joining is free
    await backend.presence.join("second", BOB, exclude="", address="203.0.113.2")


async def test_a_name_belongs_to_one_user_until_its_last_connection_lets_go(
        backend: Backend) -> None:
    forms = ("alice", "a1ice")
    assert await backend.presence.claim_name(forms, "u-alice") is None
    assert await backend.presence.claim_name(forms, "u-alice") is None  # a second tab
    assert await backend.presence.claim_name(("a1ice",), "u-mallory") == "u-alice"
    await backend.presence.release_name(forms)
    assert await backend.presence.claim_name(forms, "u-mallory") == "u-alice"
    await backend.presence.release_name(forms)
    assert await backend.presence.claim_name(forms, "u-mallory") is None
