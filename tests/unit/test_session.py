"""A session's share of exactly-once: nothing its `room_joined` gave is delivered again."""

from __future__ import annotations

from node.config import Settings
from node.delivery_batches import DeliveryBatches
from node.envelope import UNSEQUENCED, Publication
from node.metrics import Metrics
from node.session import Session

ROOM = "r"


class RecordingSocket:
    """What a session writes to, recording the frames."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True


async def _unused(*_: object) -> None:
    raise AssertionError("not called here")


def _session() -> tuple[Session, RecordingSocket]:
    socket = RecordingSocket()
    session = Session(socket, Settings(), _unused, _unused,  # type: ignore[arg-type]
                      "127.0.0.1", Metrics(), DeliveryBatches(0, 50))
    return session, socket


def _deliver(session: Session, seq: int) -> None:
    session.deliver(b"%d" % seq, Publication(ROOM, seq, b"{}"))


async def test_messages_its_room_joined_gave_are_not_delivered_again() -> None:
    session, socket = _session()
    session.hold()
    _deliver(session, 5)  # held while the join reads history
    session.release(7, 0)  # room_joined gave up to 7
    for seq in (6, 7, 8):  # 6 and 7 arrive late, after the history read had them
        _deliver(session, seq)
    session.deliver(b"presence", Publication(ROOM, UNSEQUENCED, b"{}", presence=3))
    assert socket.frames == [b"8", b"presence"]


async def test_after_the_rooms_history_forks_its_seqs_past_the_base_are_delivered() -> None:
    session, socket = _session()
    session.hold()
    session.release(40, 0)
    session.rewind(35)
    for seq in (35, 36):
        _deliver(session, seq)
    session.rewind(50)  # a base above what room_joined gave moves nothing
    _deliver(session, 37)
    assert socket.frames == [b"36", b"37"]
