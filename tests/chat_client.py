"""A thin test client over aiohttp's WebSocket client: JSON in and out, every wait bounded."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

WAIT = 5.0


class ChatClient:
    """One WebSocket connection speaking the chat protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.user_id: str | None = None  # from auth_success
        self.ws = ws

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def next_frame(self, timeout: float = WAIT) -> aiohttp.WSMessage:
        """The next frame of any kind, server pings included."""
        return await asyncio.wait_for(self.ws.receive(), timeout)

    async def recv(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next event, skipping server pings."""
        while True:
            message = await self.next_frame(timeout)
            assert message.type is aiohttp.WSMsgType.TEXT, f"expected text, got {message}"
            event = json.loads(message.data)
            if event["type"] != "ping":
                return event

    async def expect(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        event = await self.recv(timeout)
        assert event["type"] == kind, f"expected {kind}, got {event}"
        return event

    async def skip_to(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next event of this kind, skipping others."""
        while (event := await self.recv(timeout))["type"] != kind:
            pass
        return event

    async def skip_to_any(self, *kinds: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next event of any of these kinds, skipping others."""
        while (event := await self.recv(timeout))["type"] not in kinds:
            pass
        return event

    async def expect_error(self, code: str) -> dict[str, Any]:
        event = await self.expect("error")
        assert event["code"] == code, event
        assert event["message"], event
        return event

    async def expect_close(self, timeout: float = WAIT) -> tuple[int | None, str]:
        """Read until the server closes; returns the close code and reason it sent."""
        while True:
            message = await self.next_frame(timeout)
            if message.type is aiohttp.WSMsgType.CLOSE:
                return message.data, message.extra or ""
            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code, ""

    async def auth(self, name: str = "alice") -> dict[str, Any]:
        await self.send(type="auth", name=name)
        return self._identified(await self.expect("auth_success"))

    def _identified(self, success: dict[str, Any]) -> dict[str, Any]:
        self.user_id = success["userId"]
        return success

    async def resume(self, identity: dict[str, Any], name: str = "alice") -> dict[str, Any]:
        """Authenticate as the user of an earlier `auth_success`."""
        await self.send(type="auth", name=name, userId=identity["userId"],
                        token=identity["token"])
        return self._identified(await self.expect("auth_success"))

    async def join(self, room: str = "general", **extra: Any) -> dict[str, Any]:
        await self.send(type="join", room=room, **extra)
        return await self.expect("room_joined")

    async def say(self, text: str) -> None:
        await self.send(type="message", text=text)

    async def close(self) -> None:
        await self.ws.close()


async def settle_joins(members: list[ChatClient]) -> None:
    """Consume the `user_joined` each member gets for those who joined after it."""
    for index, client in enumerate(members):
        for _ in members[index + 1:]:
            await client.expect("user_joined")


async def send_concurrently(senders: list[ChatClient], per_sender: int
                            ) -> list[list[dict[str, Any]]]:
    """Every sender sends `per_sender` messages "n:i" at once; returns what each received."""

    async def send_all(client: ChatClient, n: int) -> None:
        for i in range(per_sender):
            await client.say(f"{n}:{i}")

    await asyncio.gather(*(send_all(c, n) for n, c in enumerate(senders)))
    total = per_sender * len(senders)
    return [[await c.expect("message") for _ in range(total)] for c in senders]
