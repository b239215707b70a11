"""A session's share of exactly-once: nothing its `room_joined` gave is delivered again."""

from __future__ import annotations

from node.backends.envelope import UNSEQUENCED, Publication
from node.chat.delivery_batches import DeliveryBatches
from node.chat.session import Session
from node.config import Settings
from node.metrics import Metrics
from node.runtime import session_limits

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
    session = Session(socket, session_limits(Settings()), _unused, _unused,  # type: ignore[arg-type]
                      "127.0.0.1", Metrics(), DeliveryBatches(0, 50))
    return session, socket


def _deliver(session: Session, seq: int, epoch: str = "") -> None:
    session.deliver(b"%d" % seq, Publication(ROOM, seq, b"{}", epoch=epoch))


async def test_messages_its_room_joined_gave_are_not_delivered_again() -> None:
    session, socket = _session()
    session.hold()
    _deliver(session, 5)  # held while the join reads history
    session.release(7, 0)  # room_joined gave up to 7
    for seq in (6, 7, 8):  # 6 and 7 arrive late, after the history read had them
        _deliver(session, seq)
    session.deliver(b"presence", Publication(ROOM, UNSEQUENCED, b"{}", presence=3))
    assert socket.frames == [b"8", b"presence"]


def _fork(session: Session, epoch: str) -> None:
    session.fork(epoch.encode(), Publication(ROOM, UNSEQUENCED, b"{}", epoch=epoch))


async def test_after_the_rooms_history_forks_its_seqs_past_the_base_are_delivered() -> None:
    session, socket = _session()
    session.hold()
    session.release(40, 0, "e0")
    _fork(session, "e1.35")
    for seq in (35, 36):
        _deliver(session, seq)
    _fork(session, "e2.50")  # a base above what room_joined gave moves nothing
    _deliver(session, 37)
    assert socket.frames == [b"e1.35", b"36", b"e2.50", b"37"]


async def test_a_fork_into_the_epoch_its_room_joined_was_in_is_not_told_again() -> None:
    """Its join read the new epoch before this node saw the fork: it has those seqs."""
    session, socket = _session()
    session.hold()
    session.release(40, 0, "e1.35")
    _fork(session, "e1.35")
    _deliver(session, 36)
    _deliver(session, 41)
    assert socket.frames == [b"41"]


async def test_a_fork_while_the_join_reads_history_is_decided_by_the_epoch_read() -> None:
    before, after = _session(), _session()
    for (session, _), read in ((before, "e0"), (after, "e1.35")):
        session.hold()
        _deliver(session, 38, "e0")
        _fork(session, "e1.35")
        for seq in (36, 37, 38):
            _deliver(session, seq, "e1.35")
        session.release(37, 0, read)
    assert before[1].frames == [b"38", b"e1.35", b"36", b"37", b"38"], "e0 up to 37, then e1"
    assert after[1].frames == [b"38"], "e1 up to 37: e0's 38 is another message than e1's"
