"""The diagnostic echo socket (`--echo`): every message back as it came, text as text and
binary as binary, under the same limits as a chat connection. Conformance suites such as
Autobahn|Testsuite drive the WebSocket layer through it."""

from __future__ import annotations

import asyncio

from node.background import Background
from node.transport.frames import OP_BINARY, OP_TEXT, frame
from node.transport.websocket import WebSocket


class Echo:
    """One echo connection: the WebSocket's peer."""

    __slots__ = ("_ws", "_sockets")

    def __init__(self, ws: WebSocket, sockets: EchoSockets) -> None:
        self._ws = ws
        self._sockets = sockets

    def on_text(self, text: str) -> None:
        self._ws.send(frame(OP_TEXT, text.encode()))

    def on_binary(self, data: bytes) -> None:
        self._ws.send(frame(OP_BINARY, data))

    def on_closed(self) -> None:
        self._sockets.ended(self._ws)


class EchoSockets:
    """The open echo sockets, so that a stopping node closes them as it closes chats."""

    def __init__(self) -> None:
        self._open: set[WebSocket] = set()
        self._forgetting = Background()

    def start(self, ws: WebSocket, rest: bytes) -> None:
        self._open.add(ws)
        ws.start(Echo(ws, self), rest)

    def ended(self, ws: WebSocket) -> None:
        """No more messages; the socket itself is gone once `ws.gone()` returns."""
        self._forgetting.spawn(self._forget(ws), "echo socket close")

    async def _forget(self, ws: WebSocket) -> None:
        await ws.gone()
        self._open.discard(ws)

    async def close_all(self, code: int, reason: str) -> None:
        sockets = list(self._open)
        for ws in sockets:
            ws.close(code, reason)
        await asyncio.gather(*(ws.gone() for ws in sockets))
