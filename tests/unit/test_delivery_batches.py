"""A busy client's room events share writes; a quiet one's, and every reply, go at once."""

from __future__ import annotations

import asyncio

import pytest

from node.backends.envelope import Publication
from node.chat import disconnect
from node.chat.delivery_batches import BURST, DeliveryBatches
from node.chat.disconnect import Disconnect
from node.chat.session import Session
from node.config import Settings
from node.metrics import Metrics
from node.runtime import session_limits

DELAY = 0.05
RATE = 1000.0  # a spent burst is whole again in 4 ms, long before a tick
pytestmark = pytest.mark.timeout(10)


class ClosingSession(Session):
    """Records the reasons it was closed for."""

    reasons: list[Disconnect]

    def close_soon(self, reason: Disconnect) -> None:
        self.reasons.append(reason)


class CountingSocket:
    """Records each write: one frame (`send`) or several in one write (`send_all`)."""

    def __init__(self, batch_overflows: bool = False) -> None:
        self.writes: list[list[bytes]] = []
        self.wrote = asyncio.Event()
        self._batch_overflows = batch_overflows

    def send(self, frame: bytes) -> bool:
        self.writes.append([frame])
        return True

    def send_all(self, frames: list[bytes]) -> bool:
        self.writes.append(list(frames))
        self.wrote.set()
        return not self._batch_overflows

    async def next_write(self) -> list[bytes]:
        self.wrote.clear()
        await asyncio.wait_for(self.wrote.wait(), 2)
        return self.writes[-1]


async def _unused(*_: object) -> None:
    raise AssertionError("not called here")


def _session(delay: float = DELAY, socket: CountingSocket | None = None,
             batches: DeliveryBatches | None = None) -> tuple[ClosingSession, CountingSocket]:
    socket = socket or CountingSocket()
    session = ClosingSession(socket, session_limits(Settings()), _unused, _unused,  # type: ignore[arg-type]
                             "127.0.0.1", Metrics(), batches or DeliveryBatches(delay, RATE))
    session.reasons = []
    return session, socket


def _deliver(session: Session, *seqs: int) -> None:
    for seq in seqs:
        session.deliver(b"%d" % seq, Publication("r", seq, b"{}"))


def _frames(n: int) -> list[bytes]:
    return [b"%d" % seq for seq in range(1, n + 1)]


async def test_a_quiet_client_gets_each_event_in_a_write_of_its_own_at_once() -> None:
    session, socket = _session()
    _deliver(session, *range(1, BURST + 1))
    assert socket.writes == [[frame] for frame in _frames(BURST)]


async def test_past_the_burst_events_wait_for_the_tick_and_go_out_in_one_write_in_order() -> None:
    session, socket = _session()
    _deliver(session, *range(1, BURST + 4))
    assert len(socket.writes) == BURST  # the rest waits
    assert await socket.next_write() == _frames(BURST + 3)[BURST:]


async def test_a_busy_client_gets_about_one_write_per_tick() -> None:
    session, socket = _session()
    _deliver(session, *range(1, BURST + 1))
    for tick in range(3):
        _deliver(session, 10 * tick + 11, 10 * tick + 12, 10 * tick + 13)
        assert await socket.next_write() == [b"%d" % (10 * tick + n) for n in (11, 12, 13)]
    assert len(socket.writes) == BURST + 3


async def test_a_busy_client_stays_on_the_tick_though_its_burst_is_whole_again() -> None:
    session, socket = _session()
    _deliver(session, *range(1, BURST + 2))
    assert await socket.next_write() == [b"%d" % (BURST + 1)]  # 50 ms: the burst is back
    _deliver(session, 11, 12)
    assert len(socket.writes) == BURST + 1  # still waiting for the tick
    assert await socket.next_write() == [b"11", b"12"]


async def test_a_tick_with_nothing_to_write_ends_the_busy_spell() -> None:
    batches = DeliveryBatches(DELAY, RATE)
    session, socket = _session(batches=batches)
    pacer, paced = _session(batches=batches)  # busy after `session`: flushed after it
    _deliver(session, *range(1, BURST + 2))
    _deliver(pacer, *range(1, BURST + 2))
    await paced.next_write()  # the tick that wrote both batches
    _deliver(pacer, 11)
    assert await paced.next_write() == [b"11"]  # the next tick: nothing for `session`
    writes = len(socket.writes)
    _deliver(session, 11)
    assert socket.writes[writes:] == [[b"11"]]  # at once


async def test_a_reply_takes_the_waiting_events_with_it_at_once() -> None:
    session, socket = _session()
    _deliver(session, *range(1, BURST + 3))
    session.send(b"reply")
    assert socket.writes[-1] == [*_frames(BURST + 2)[BURST:], b"reply"]
    session.flush()  # what the tick does: nothing is left to write
    assert len(socket.writes) == BURST + 1


async def test_without_a_write_delay_every_event_is_written_at_once() -> None:
    session, socket = _session(delay=0)
    _deliver(session, *range(1, 3 * BURST))
    assert socket.writes == [[frame] for frame in _frames(3 * BURST - 1)]


async def test_a_batch_that_overflows_the_buffer_closes_the_client_as_slow() -> None:
    session, socket = _session(socket=CountingSocket(batch_overflows=True))
    _deliver(session, *range(1, BURST + 3))
    assert session.reasons == []
    await socket.next_write()
    assert session.reasons == [disconnect.SLOW_CONSUMER]
