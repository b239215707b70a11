"""A reconnecting asyncio chat client.

It connects, authenticates and joins one room; answers server pings and pings the server
(a path cut without a close is found within 1.5 × `heartbeat`); on any close or error
it reconnects with capped exponential backoff and full jitter (at least `retryAfterMs` after
a `server_shutdown`, at least `Retry-After` after a refused upgrade, and likewise after a join
refused as `unavailable`), re-authenticates and re-joins with `since`/`epoch`, so that the caller
sees every message of the room exactly once and in seq order. A `room_joined` with
`"recovered": false` is passed to the caller: messages were lost and the client says so. A
resume whose missed messages did not all fit in `room_joined` (`more`) is completed with
`history` pages before any of them is delivered. A `messages_lost` event (seqs the room will
never deliver: it said more than it keeps while this client's node was cut off) is passed
to the caller in line, where those messages would have been; so is a `history_reset` (the
room's history forked in a failover: what follows is the new epoch's, from its `seq + 1`).
`members` is the room's member list, kept by the presence rule of docs/protocol.md: the
snapshot of each `room_joined`, then only announcements with a newer presence version (older
ones are not passed on), and a fresh snapshot when a version was skipped. In a room larger
than the server lists (`large`), `members` stays empty and `user_count` keeps the count.
Close codes that mean "do not come back" (1003, 1008, 1009, 4000-4999) end it. A name refused
as taken (`name_taken`: another user holds it, or took it while this one was away past the
server's grace) does not end the session: `rename` picks another and the client connects
again as the same user, in the same room, from the same position; the error is passed on.

    async with ChatClient("ws://127.0.0.1:8080/ws", "alice", "general") as chat:
        await chat.send("hello")              # returns the message's seq once it is stored
        async for event in chat.events():     # messages, presence, room_joined, errors
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from node.backoff import Backoff

log = logging.getLogger("node.client")

FINAL_CLOSE_CODES = frozenset({1003, 1008, 1009})
RECENT_IDS = 1024
UNKNOWN_OUTCOME = "unknown_outcome"
PAGE_RETRY = 1.0  # seconds before asking again for a page refused as rate_limited
# Seconds between the client's WebSocket pings (as Socket.IO's and Centrifugo's 25 s): a dead
# path is found within 1.5 times it, where the server's own pings (--ping-timeout) find it.
HEARTBEAT = 25.0


def numbered(name: str) -> str:
    """The next name to try after `name` was taken: alice, alice2, alice3, ..."""
    stem = name.rstrip("0123456789")
    number = name[len(stem):]
    return f"{stem}{int(number) + 1 if number else 2}"


def is_final(code: int | None) -> bool:
    """A close the server means as "do not reconnect"."""
    return code is not None and (code in FINAL_CLOSE_CODES or 4000 <= code < 5000)


def _retry_after(refused: aiohttp.WSServerHandshakeError) -> float:
    """The seconds a refused upgrade's Retry-After asks for (0 without one)."""
    try:
        return float(dict(refused.headers or {}).get("Retry-After", "0"))
    except ValueError:
        return 0.0


class SendFailed(Exception):
    """The server refused a message (`code` as in its error event): nothing was stored. Or,
    with `code` `unknown_outcome`, nobody can tell: it was sent, no answer came, and the
    resumed history no longer reaches back far enough to say (sending it again could store
    it twice)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ClientClosed(Exception):
    """The client stopped for good (closed by the caller or by a final close code)."""


@dataclass(slots=True)
class _Pending:
    client_id: str  # the idempotency key: every resend of it is stored once
    text: str
    result: asyncio.Future[int]
    sent_on: int = 0  # the connection it was last sent on: never twice on one connection


class ChatClient:
    def __init__(self, url: str, name: str, room: str, *,
                 backoff: Backoff | None = None, jwt: str | None = None,
                 rename: Callable[[str], str] = numbered,
                 heartbeat: float = HEARTBEAT) -> None:
        """`jwt`: the identity provider's token, for servers that require one (`name` is
        then the token's); `refresh` replaces it before it expires. `rename`: the name to
        try when the server says `name` is taken. `heartbeat`: seconds between WebSocket
        pings; a connection whose pong does not come within half of it is dead (a path cut
        without a close: nothing else would ever tell) and is replaced."""
        self.url = url
        self.name = name
        self.room = room
        self.jwt = jwt
        self.user_id: str | None = None
        self.token: str | None = None
        self.node: str | None = None
        self.last_seq = 0
        self.epoch: str | None = None
        self.members: dict[str, str] = {}  # user id -> name, by the presence rule
        self.user_count = 0
        self.large = False  # the room has more members than the server lists
        self.presence = 0  # the presence version `members` reflects
        self.connections = 0
        self._backoff = backoff or Backoff()
        self._heartbeat = heartbeat
        self._rename = rename
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._joined = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._pending: _Pending | None = None
        self._recent_ids: deque[str] = deque(maxlen=RECENT_IDS)
        # A resume whose gap did not fit in room_joined: the messages so far (paged back with
        # `history` until the gap is filled), and the live ones that arrive meanwhile.
        self._backfill: list[dict[str, Any]] | None = None
        self._held: list[dict[str, Any]] = []
        self._joined_seq = 0
        self._recovered = False  # the last room_joined recovered the whole gap
        self._page_retry: asyncio.Task[None] | None = None
        self._retry_after = 0.0
        self._stopped: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChatClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and join; returns once the first `room_joined` arrived. A start that fails
        (or times out) leaves nothing open."""
        self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())
        try:
            await self._wait_joined(timeout)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._stop("closed by the caller")
        if self._page_retry is not None:
            self._page_retry.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()

    async def send(self, text: str, timeout: float = 10.0, client_id: str | None = None
                   ) -> int:
        """Send one message and return its seq once the room stored it. `client_id`: its
        idempotency key (1-64 printable ASCII characters; a fresh one by default): a caller
        whose send timed out sends it again with the same key to have it stored once.

        It returns once the message came back in the room's stream (or, sent again, the
        server said it was stored before: `message_sent` with `duplicate`). A message not
        back when the connection drops is sent again after the resume with the same
        `clientId`, and so is one the server could not say it stored (`unknown_outcome`:
        the client reconnects first): the server stores it once and answers a resend with
        the first one's seq. Raises `SendFailed` when the server refuses it.
        """
        async with self._send_lock, asyncio.timeout(timeout):
            pending = _Pending(client_id or uuid.uuid4().hex[:16], text,
                               asyncio.get_running_loop().create_future())
            self._pending = pending
            try:
                await self._wait_joined(timeout)
                await self._send_pending()
                return await pending.result
            finally:
                self._pending = None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event for the caller, in order; ends when the client stops."""
        while True:
            event = await self._events.get()
            yield event
            if event["type"] == "closed":
                return

    async def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._events.get(), timeout)

    # --- connection loop -------------------------------------------------------------

    async def _run(self) -> None:
        assert self._http is not None
        while self._stopped is None:
            try:
                async with self._http.ws_connect(self.url, heartbeat=self._heartbeat) as ws:
                    self._ws = ws
                    self.connections += 1
                    await self._converse(ws)
                    code = ws.close_code
            except aiohttp.WSServerHandshakeError as refused:  # 503: full or not ready
                self._retry_after = _retry_after(refused)
                log.debug("%s: upgrade refused with %s", self.name, refused.status)
                code = None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("%s: connection to %s failed: %r", self.name, self.url, exc)
                code = None
            finally:
                self._ws = None
                self._joined.clear()
            if is_final(code):
                self._stop(f"closed by the server with {code}")
            elif self._stopped is None:
                delay = max(self._retry_after, self._backoff.next_delay())
                log.debug("%s: closed with %s; reconnecting in %.2fs", self.name, code, delay)
                await asyncio.sleep(delay)
                self._retry_after = 0.0

    async def refresh(self, jwt: str) -> None:
        """Hand the server a new token for this user (and use it to reconnect from now on)."""
        self.jwt = jwt
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self._ws.send_json({"type": "refresh", "token": jwt})

    async def _converse(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        auth: dict[str, Any] = {"type": "auth", "name": self.name}
        if self.jwt is not None:  # the token names the user: the same one again
            auth = {"type": "auth", "token": self.jwt}
        elif self.token is not None:  # the same user again: no leave/join flap for the room
            auth |= {"userId": self.user_id, "token": self.token}
        await ws.send_json(auth)
        join: dict[str, Any] = {"type": "join", "room": self.room}
        if self.epoch is not None:
            join |= {"since": self.last_seq, "epoch": self.epoch}
        await ws.send_json(join)
        async for frame in ws:
            if frame.type is aiohttp.WSMsgType.TEXT:
                await self._on_event(ws, json.loads(frame.data))

    async def _on_event(self, ws: aiohttp.ClientWebSocketResponse, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "ping":
            await ws.send_json({"type": "pong", "timestamp": event.get("timestamp")})
        elif kind == "auth_success":
            self.user_id, self.node = event["userId"], event["node"]
            self.token = event.get("token")  # the resume token (servers without JWT)
        elif kind == "room_joined":
            await self._on_joined(ws, event)
        elif kind == "history" and self._backfill is not None:
            await self._on_page(ws, event)
        elif kind == "message" and self._backfill is not None:
            self._held.append(event)
        elif kind == "message":
            await self._on_message(ws, event)
        elif kind in ("user_joined", "user_left"):
            await self._on_presence(ws, event)
        elif kind == "message_sent" and event.get("duplicate"):
            pending = self._pending  # stored before: its echo came, or the resume has it
            if pending is not None and event.get("clientId") == pending.client_id:
                self._settle(seq=event["seq"])
        elif kind == "user_count":
            self._on_count(event)
        elif kind == "messages_lost":
            if event["to"] > self.last_seq:  # else: from before this client's room_joined
                self.last_seq = event["to"]
                self._events.put_nowait(event)
        elif kind == "history_reset":
            self.last_seq, self.epoch = min(self.last_seq, event["seq"]), event["epoch"]
            self._events.put_nowait(event)
        elif kind == "error" and event["code"] == "rate_limited" and self._backfill:
            self._page_retry = asyncio.create_task(self._page_later(ws))
        elif kind == "error" and event["code"] == "name_taken":
            self.name = self._rename(self.name)
            self._events.put_nowait(event)
            await ws.close()  # not authenticated: connect again as the same user, renamed
        elif (kind == "error" and event["code"] == UNKNOWN_OUTCOME
              and self._pending is not None):
            self._events.put_nowait(event)
            await ws.close()  # sent again after the resume, with the same clientId
        elif kind == "error" and self._pending is not None:
            self._settle(error=SendFailed(event["code"], event["message"]))
        elif kind == "error" and event["code"] == "unavailable" and not self._joined.is_set():
            await ws.close()  # the join failed for now: connect again, with backoff
        else:
            if kind == "server_shutdown":
                self._retry_after = event.get("retryAfterMs", 0) / 1000
            self._events.put_nowait(event)

    async def _on_joined(self, ws: aiohttp.ClientWebSocketResponse, event: dict[str, Any]
                         ) -> None:
        if event["epoch"] != self.epoch:
            self.last_seq = 0  # another incarnation of the room: old seqs mean nothing
        self.epoch = event["epoch"]
        self.members = {m["userId"]: m["name"] for m in event["members"]}
        self.presence, self.user_count = event["presence"], event["userCount"]
        self.large = event.get("large", False)
        self._events.put_nowait(event)
        self._joined_seq, self._backfill, self._held = event["seq"], None, []
        self._recovered = event.get("recovered") is True
        await self._take_history(ws, event["history"], self._recovered and event["more"])

    async def _take_history(self, ws: aiohttp.ClientWebSocketResponse,
                            messages: list[dict[str, Any]], more: bool) -> None:
        """Deliver a resume's messages, once every one after the last seen is at hand: while
        older ones are kept that the client has not seen, page back for them first."""
        if more and messages and messages[0]["seq"] > self.last_seq + 1:
            self._backfill = messages
            await ws.send_json({"type": "history", "before": messages[0]["seq"]})
            return
        held, self._backfill, self._held = self._held, None, []
        for message in messages + held:
            self._accept(message)
        self.last_seq = max(self.last_seq, self._joined_seq)
        self._backoff.reset()
        self._joined.set()
        pending = self._pending
        if pending is not None and not pending.result.done():
            await self._send_pending()  # stored once, however often it was sent

    async def _on_page(self, ws: aiohttp.ClientWebSocketResponse, event: dict[str, Any]
                       ) -> None:
        assert self._backfill is not None
        await self._take_history(ws, event["messages"] + self._backfill, event["more"])

    async def _page_later(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The page was refused as too soon (history requests share the join allowance)."""
        await asyncio.sleep(PAGE_RETRY)
        if self._backfill and not ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await ws.send_json({"type": "history", "before": self._backfill[0]["seq"]})

    async def _on_presence(self, ws: aiohttp.ClientWebSocketResponse, event: dict[str, Any]
                           ) -> None:
        """Apply a membership change newer than the member list; re-join for a fresh
        snapshot when one was skipped (the room's changes are numbered one by one)."""
        if event["presence"] <= self.presence:
            return  # already in the snapshot
        if event["presence"] > self.presence + 1:
            await self._rejoin(ws)
        if event["type"] == "user_joined":
            self.members[event["userId"]] = event["user"]
        else:
            self.members.pop(event["userId"], None)
        self.presence, self.user_count = event["presence"], event["userCount"]
        self._events.put_nowait(event)

    def _on_count(self, event: dict[str, Any]) -> None:
        """A large room's newest count: versions skip (changes come together), and the
        member list is no longer kept."""
        if event["presence"] <= self.presence:
            return
        self.members, self.large = {}, True
        self.presence, self.user_count = event["presence"], event["userCount"]
        self._events.put_nowait(event)

    async def _rejoin(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_json({"type": "join", "room": self.room, "since": self.last_seq,
                            "epoch": self.epoch})

    async def _on_message(self, ws: aiohttp.ClientWebSocketResponse, event: dict[str, Any]
                          ) -> None:
        if event["seq"] > self.last_seq:
            self._accept(event)
        elif event["id"] not in self._recent_ids:
            # An older seq never seen: the room's history was reset. Re-join to find out.
            await self._rejoin(ws)

    def _accept(self, message: dict[str, Any]) -> None:
        """Deliver a message once: seqs at or below the last one delivered are duplicates."""
        if message["seq"] <= self.last_seq:
            return
        self.last_seq = message["seq"]
        self._recent_ids.append(message["id"])
        self._events.put_nowait(message)
        pending = self._pending  # its own echo: the room delivered it, to this client too
        if pending is not None and message.get("clientId") == pending.client_id:
            self._settle(seq=message["seq"])

    async def _send_pending(self) -> None:
        pending, ws = self._pending, self._ws
        if pending is None or ws is None or ws.closed or pending.sent_on == self.connections:
            return  # the next room_joined sends it, or it went out on this connection already
        pending.sent_on = self.connections
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await ws.send_json({"type": "message", "text": pending.text,
                                "clientId": pending.client_id})

    def _settle(self, seq: int | None = None, error: Exception | None = None) -> None:
        pending = self._pending
        if pending is None or pending.result.done():
            return
        if error is not None:
            pending.result.set_exception(error)
        else:
            pending.result.set_result(seq or 0)

    async def _wait_joined(self, timeout: float) -> None:
        if self._stopped is not None:
            raise ClientClosed(self._stopped)
        await asyncio.wait_for(self._joined.wait(), timeout)

    def _stop(self, why: str) -> None:
        if self._stopped is None:
            self._stopped = why
            self._events.put_nowait({"type": "closed", "reason": why})
            if self._pending is not None:
                self._settle(error=ClientClosed(why))
