"""A zero-loss load: 60 clients of the client library in 6 rooms, about 50 messages/s, with
a check that every client got every accepted message exactly once, in order. Shared by the
launcher's and the containers' zero-loss tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from node.client import UNKNOWN_OUTCOME, ChatClient, SendFailed


class HasWsUrl(Protocol):
    @property
    def ws_url(self) -> str: ...


ROOMS = 6
PER_ROOM = 10
SEND_INTERVAL = 0.12  # per room: 6 rooms -> about 50 messages/s in all


class Load:
    """60 clients in 6 rooms; one sender loop per room cycling through its members."""

    def __init__(self, cluster: HasWsUrl) -> None:
        self.rooms = [f"load{r}" for r in range(ROOMS)]
        self.clients = {room: [ChatClient(cluster.ws_url, f"{room}-u{i}", room)
                               for i in range(PER_ROOM)] for room in self.rooms}
        self.received: dict[ChatClient, list[dict[str, Any]]] = {}
        self.unrecovered: list[dict[str, Any]] = []
        self.unsure: set[ChatClient] = set()  # told a send's outcome was unknown (it reconnects)
        self.presence_changes: list[dict[str, Any]] = []
        self.sent: dict[str, list[int]] = {room: [] for room in self.rooms}
        self.retries = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def everyone(self) -> list[ChatClient]:
        return [c for clients in self.clients.values() for c in clients]

    async def start(self) -> None:
        await asyncio.gather(*(c.start(timeout=20) for c in self.everyone))
        for client in self.everyone:
            self.received[client] = []
            self._tasks.append(asyncio.create_task(self._collect(client)))
        for room in self.rooms:
            self._tasks.append(asyncio.create_task(self._send_loop(room)))

    async def _collect(self, client: ChatClient) -> None:
        async for event in client.events():
            if event["type"] == "message":
                self.received[client].append(event)
            elif event["type"] == "room_joined" and event.get("recovered") is False:
                self.unrecovered.append(event)
            elif event["type"] == "history_reset":  # a failover: what came after the base
                # may exist nowhere else (the new primary's messages follow); what was
                # acknowledged must still all arrive
                self.received[client] = [m for m in self.received[client]
                                         if m["seq"] <= event["seq"]]
            elif event["type"] == "error" and event["code"] == UNKNOWN_OUTCOME:
                self.unsure.add(client)
            elif event["type"] in ("user_joined", "user_left"):
                self.presence_changes.append(event)

    async def _send_loop(self, room: str) -> None:
        n = 0
        while not self._stop.is_set():
            sender = self.clients[room][n % PER_ROOM]
            self.sent[room].append(await self._send(sender, f"{room}:{n}"))
            n += 1
            await asyncio.sleep(SEND_INTERVAL)

    async def _send(self, sender: ChatClient, text: str) -> int:
        for _ in range(20):
            try:
                return await sender.send(text, timeout=15)
            except (SendFailed, TimeoutError):
                self.retries += 1
                await asyncio.sleep(0.2)
        raise AssertionError(f"{text} was never accepted")

    async def finish(self) -> None:
        """Stop sending, then wait until every client has every message of its room."""
        self._stop.set()
        await asyncio.gather(*self._tasks[len(self.everyone):])
        async with asyncio.timeout(30):
            while not self._all_delivered():
                await asyncio.sleep(0.1)

    def _all_delivered(self) -> bool:
        return all(len(self.received[c]) >= len(self.sent[room])
                   for room, clients in self.clients.items() for c in clients)

    def assert_exactly_once_in_order(self) -> None:
        for room, clients in self.clients.items():
            expected = list(range(1, len(self.sent[room]) + 1))
            assert sorted(self.sent[room]) == expected, f"{room}: accepted seqs have gaps"
            for client in clients:
                assert [m["seq"] for m in self.received[client]] == expected, client.name
        assert self.unrecovered == [], [(e["room"], e["seq"], e["epoch"])
                                        for e in self.unrecovered]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.everyone))


async def under_load(cluster: HasWsUrl, disrupt: Callable[[], Awaitable[None]]) -> Load:
    load = Load(cluster)
    await load.start()
    try:
        await asyncio.sleep(1.0)
        await disrupt()
        await asyncio.sleep(1.0)
        await load.finish()
        load.assert_exactly_once_in_order()
        return load
    finally:
        await load.close()
