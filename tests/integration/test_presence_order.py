"""Presence in the room's order, under churn on three nodes: every member's view — the
`room_joined` snapshot plus the announcements after it, by the rule of docs/protocol.md —
equals the room's real membership, and each announcement's count is the size of the view it
makes."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from gateway.cluster import Cluster
from node.client import ChatClient
from tests.conftest import REDIS_SHARDS

ITERATIONS = 12
CHURNERS = 9  # joining, then half of them leaving, all at once, spread over three nodes
SETTLE = 15.0


class Member:
    """A client of the library, and its view replayed from the events it was given."""

    def __init__(self, cluster: Cluster, node: int, name: str, room: str) -> None:
        self.client = ChatClient(cluster.node_ws_url(node), name, room)
        self.view: dict[str, str] = {}
        self.miscounts: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start(timeout=20)
        self._reader = asyncio.create_task(self._replay())

    async def _replay(self) -> None:
        async for event in self.client.events():
            if event["type"] == "room_joined":
                self.view = {m["userId"]: m["name"] for m in event["members"]}
                count = event["userCount"]
            elif event["type"] == "user_joined":
                self.view[event["userId"]] = event["user"]
                count = event["userCount"]
            elif event["type"] == "user_left":
                self.view.pop(event["userId"], None)
                count = event["userCount"]
            else:
                continue
            if count != len(self.view):
                self.miscounts.append(event)

    async def stop(self) -> None:
        await self.client.close()
        if self._reader is not None:
            await self._reader


async def _settled(members: list[Member]) -> None:
    """Until every member's view is the set of members connected now (bounded)."""
    real = {m.client.user_id for m in members}
    async with asyncio.timeout(SETTLE):
        while any(set(m.view) != real or set(m.client.members) != real for m in members):
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("redis_shards", REDIS_SHARDS)
async def test_every_view_is_the_real_membership_after_concurrent_joins_and_leaves(
        make_cluster, redis_shards: int) -> None:
    cluster = make_cluster(nodes=3, redis_shards=redis_shards)
    room = "churn"
    randomness = random.Random(11)
    members = [Member(cluster, node, f"watcher{node}", room) for node in (1, 2, 3)]
    for member in members:
        await member.start()
    try:
        for iteration in range(ITERATIONS):
            joiners = [Member(cluster, 1 + n % 3, f"c{iteration}-{n}", room)
                       for n in range(CHURNERS)]
            leavers = randomness.sample(members[3:], k=len(members[3:]) // 2)
            await asyncio.gather(*(m.start() for m in joiners), *(m.stop() for m in leavers))
            members = [m for m in members if m not in leavers] + joiners
            await _settled(members)
        assert [m.miscounts for m in members] == [[]] * len(members)
    finally:
        await asyncio.gather(*(m.stop() for m in members))
