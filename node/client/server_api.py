"""A typed helper for the server API (docs/server-api.md), for an application's backend.

    async with ServerAPI("http://10.0.0.5:8001", key) as api:
        seq = await api.publish("general", "Maintenance at noon")
        members = (await api.presence("general"))["members"]

`url` is the API listener's address (`--api-listen`), or `unix:/path/to/socket`
(`--api-socket`). A refused command raises `ServerAPIError` with the API's machine code.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp

UNIX = "unix:"


class ServerAPIError(Exception):
    """A command the API refused: `status` (HTTP) and `code` (machine-readable)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code


class ServerAPI:
    def __init__(self, url: str, key: str, timeout: float = 10.0) -> None:
        connector = (aiohttp.UnixConnector(path=url.removeprefix(UNIX))
                     if url.startswith(UNIX) else None)
        self._base = "http://localhost" if connector else url.rstrip("/")
        self._http = aiohttp.ClientSession(connector=connector,
                                           timeout=aiohttp.ClientTimeout(total=timeout),
                                           headers={"X-API-Key": key})

    async def __aenter__(self) -> ServerAPI:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def call(self, command: str, **fields: Any) -> Any:
        """Any command, with its body's fields as the API names them (camelCase)."""
        async with self._http.post(f"{self._base}/api/{command}",
                                   json={k: v for k, v in fields.items() if v is not None}
                                   ) as reply:
            answer = await reply.json(content_type=None)
        if "error" in answer:
            raise ServerAPIError(reply.status, answer["error"]["code"],
                                 answer["error"]["message"])
        return answer["result"]

    async def publish(self, room: str, text: str, *, user_id: str | None = None,
                      name: str | None = None, client_id: str | None = None) -> int:
        """Post into a room as the application (or as `user_id` named `name`); the seq."""
        result = await self.call("publish", room=room, text=text, userId=user_id, name=name,
                                 clientId=client_id)
        return int(result["seq"])

    async def broadcast(self, rooms: list[str], text: str, *, user_id: str | None = None,
                        name: str | None = None, client_id: str | None = None
                        ) -> list[dict[str, Any]]:
        """Post into each room: per room its seq or its error."""
        result = await self.call("broadcast", rooms=rooms, text=text, userId=user_id,
                                 name=name, clientId=client_id)
        return list(result["results"])

    async def disconnect(self, user_id: str, *, code: int | None = None,
                         reason: str | None = None, until: float | None = None) -> None:
        """Close the user's connections on every node; with `until` (Unix seconds), ban it
        till then (a time past lifts a ban)."""
        await self.call("disconnect", userId=user_id, code=code, reason=reason, until=until)

    async def kick(self, room: str, user_id: str, *, until: float | None = None) -> None:
        """Take the user out of the room on every node; with `until`, bar it from the room
        till then."""
        await self.call("kick", room=room, userId=user_id, until=until)

    async def mute(self, room: str, user_id: str, until: float) -> None:
        """Refuse the user's messages to the room until `until` (a time past lifts it)."""
        await self.call("mute", room=room, userId=user_id, until=until)

    async def delete(self, room: str, seq: int) -> None:
        """Replace message `seq` of the room by a tombstone; its members are told."""
        await self.call("delete", room=room, seq=seq)

    async def presence(self, room: str) -> dict[str, Any]:
        return dict(await self.call("presence", room=room))

    async def presence_stats(self, room: str) -> dict[str, Any]:
        return dict(await self.call("presence_stats", room=room))

    async def history(self, room: str, *, since: int | None = None, before: int | None = None,
                      limit: int | None = None) -> dict[str, Any]:
        return dict(await self.call("history", room=room, since=since, before=before,
                                    limit=limit))

    async def rooms(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        return dict(await self.call("rooms", offset=offset, limit=limit))

    async def info(self) -> dict[str, Any]:
        return dict(await self.call("info"))

    async def batch(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each command (a dict with its `command` and fields) answered in order."""
        return list(await self.call("batch", commands=commands))
