"""The benchmark client for the Socket.IO peers (Engine.IO v4, Socket.IO v5 over WebSocket),
with the raw technique of loadtest.rawclient: no frame or JSON parsing on the read path, the
stamp marker found in the byte stream.

    open:     server `0{"sid":...,"pingInterval":...}`  -> client `40` (connect namespace /)
    connect:  server `40{"sid":...}`                    -> client `42["join","<room>"]`
    joined:   server `42["joined","<room>"]`
    message:  client `42["message",{"room":...,"text":...}]`; the room gets the same object
    ping:     server `2` (a one-byte text frame)        -> client `3`
"""

from __future__ import annotations

from loadtest.rawclient import RawMember

OPEN = b'"pingInterval"'  # only in the open packet
CONNECTED = b'40{"sid"'
JOINED = b'42["joined"'
CONNECT_ERROR = b"44{"
PING_FRAME = b"\x81\x012"  # FIN text frame, unmasked, one byte: "2"


class SocketIOMember(RawMember):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._stage = 0  # 0: waiting for open, 1: for the namespace, 2: for joined

    def _target(self) -> str:
        return "/socket.io/?EIO=4&transport=websocket"

    def _on_upgraded(self) -> None:
        pass  # the server speaks first

    def say(self, text: str) -> None:
        self.send(f'42["message",{{"room":"{self.room}","text":"{text}"}}]')

    def _answer_pings(self, data: bytes) -> tuple[int, int]:
        done, at = 0, data.find(PING_FRAME)
        while at >= 0:
            self.send("3")
            done = at + len(PING_FRAME)
            at = data.find(PING_FRAME, done)
        return done, -1

    def _join_progress(self, data: bytes) -> None:
        if self._stage == 0 and data.find(OPEN) >= 0:
            self._stage = 1
            self.send("40")
        elif self._stage == 1 and data.find(CONNECTED) >= 0:
            self._stage = 2
            self.send(f'42["join","{self.room}"]')
        elif self._stage == 2 and data.find(JOINED) >= 0:
            self.joined.set_result(None)
        elif (at := data.find(CONNECT_ERROR)) >= 0:
            self._fail(ConnectionError(data[at:at + 200].decode(errors="replace")))
