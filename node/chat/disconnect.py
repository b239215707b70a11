"""Why the server closes a connection: close codes as data."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import WSCloseCode


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A WebSocket close the server initiates, and whether the client should come back."""

    code: int
    reason: str
    reconnect: bool


PING_TIMEOUT = Disconnect(WSCloseCode.OK, "Ping timeout", reconnect=True)
SHUTDOWN = Disconnect(WSCloseCode.GOING_AWAY, "Server shutting down", reconnect=True)
BINARY_FRAME = Disconnect(WSCloseCode.UNSUPPORTED_DATA, "Binary frames are not supported", reconnect=False)
FLOOD = Disconnect(WSCloseCode.POLICY_VIOLATION, "Rate limit exceeded", reconnect=False)
SLOW_CONSUMER = Disconnect(WSCloseCode.TRY_AGAIN_LATER, "Slow consumer", reconnect=True)
INTERNAL = Disconnect(WSCloseCode.INTERNAL_ERROR, "Internal error", reconnect=True)
AUTH_FAILED = Disconnect(4001, "Authentication failed", reconnect=False)
TOKEN_EXPIRED = Disconnect(4001, "Token expired", reconnect=True)  # with a fresh token
BANNED = Disconnect(4003, "Banned", reconnect=False)
