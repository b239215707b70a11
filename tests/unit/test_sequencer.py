import asyncio
from typing import Any

import pytest

from node.backends.broker import HistoryWindow
from node.backends.envelope import UNSEQUENCED, Publication
from node.backends.memory.broker import MemoryBroker
from node.background import FAILURES
from node.chat.sequencer import REPAIR_ATTEMPTS, Sequencer

ROOM = "r"


Emitted = list[int | tuple[int, int] | str]


async def _setup(stored: int, capacity: int = 100) -> tuple[MemoryBroker, Sequencer, Emitted]:
    """A room whose history holds messages 1..stored, and a sequencer recording what it emits
    (a fork of the room's history as "fork@<base>", seqs reported lost as (first, last))."""
    broker = MemoryBroker(capacity=capacity, capacity_bytes=2**20)
    for _ in range(stored):
        await broker.publish_message(ROOM, b'{"seq":', (), 0)
    emitted: Emitted = []
    sequencer = Sequencer(broker, lambda p: emitted.append(p.seq),
                          lambda room, epoch, base: emitted.append(f"fork@{base}"),
                          lambda room, first, last: emitted.append((first, last)), capacity)
    return broker, sequencer, emitted


def _message(seq: int, epoch: str = "") -> Publication:
    return Publication(ROOM, seq, b'{"seq":%d}' % seq, epoch=epoch)


async def test_in_order_messages_pass_and_duplicates_are_dropped() -> None:
    _, sequencer, emitted = await _setup(3)
    for seq in (1, 2, 2, 1, 3):
        sequencer.accept(_message(seq))
    assert emitted == [1, 2, 3]


async def test_a_gap_is_filled_from_history_before_newer_events() -> None:
    _, sequencer, emitted = await _setup(6)
    sequencer.accept(_message(1))
    sequencer.accept(_message(4))
    sequencer.accept(Publication(ROOM, UNSEQUENCED, b"{}"))
    sequencer.accept(_message(5))
    await sequencer.idle()
    assert emitted == [1, 2, 3, 4, UNSEQUENCED, 5]


async def test_a_gap_past_retained_history_is_reported_in_line_once() -> None:
    _, sequencer, emitted = await _setup(10, capacity=3)  # only 8..10 retained
    sequencer.accept(_message(2))
    sequencer.accept(_message(10))
    await sequencer.idle()
    assert emitted == [2, (3, 7), 8, 9, 10]


async def test_an_outage_longer_than_history_is_reported_before_what_history_kept() -> None:
    """Issue 29: a node cut from Redis while the room said more than it keeps delivered the
    kept messages after a silent jump."""
    broker, sequencer, emitted = await _setup(2, capacity=3)
    sequencer.track(ROOM, (await broker.history(ROOM, 1)).epoch, 2)
    for _ in range(8):  # 3..10 said meanwhile; only 8..10 kept
        await broker.publish_message(ROOM, b'{"seq":', (), 0)
    sequencer.recover()
    await sequencer.idle()
    assert emitted == [(3, 7), 8, 9, 10]


async def test_a_gap_no_history_fills_is_reported_before_the_next_message() -> None:
    broker, sequencer, emitted = await _setup(2)
    sequencer.accept(_message(1))
    sequencer.accept(_message(2))
    sequencer.accept(_message(5))  # 3 and 4 never stored here: history cannot have them
    await sequencer.idle()
    assert emitted == [1, 2, (3, 4), 5]


async def test_recover_delivers_what_was_said_during_an_outage() -> None:
    broker, sequencer, emitted = await _setup(2)
    sequencer.track(ROOM, (await broker.history(ROOM, 1)).epoch, 2)
    for _ in range(3):
        await broker.publish_message(ROOM, b'{"seq":', (), 0)  # lost on the way: never accepted
    sequencer.recover()
    await sequencer.idle()
    sequencer.accept(_message(6))
    assert emitted == [3, 4, 5, 6]


async def test_a_reset_history_is_delivered_from_its_first_seq() -> None:
    _, sequencer, emitted = await _setup(2)
    sequencer.track(ROOM, "an-older-epoch", 40)
    sequencer.recover()
    await sequencer.idle()
    sequencer.accept(_message(2))
    sequencer.accept(_message(3))
    assert emitted == ["fork@0", 1, 2, 3], "the sessions are told before seq 1 comes again"


async def test_a_history_that_numbered_on_in_a_new_epoch_is_not_delivered_again() -> None:
    broker, sequencer, emitted = await _setup(3)
    epoch = (await broker.history(ROOM, 1)).epoch
    sequencer.track(ROOM, epoch, 3)
    await broker.publish_message(ROOM, b'{"seq":', (), 5, epoch)  # behind: seq 6, new epoch
    sequencer.recover()
    await sequencer.idle()
    sequencer.accept(_message(7))
    assert emitted == ["fork@5", (4, 5), 6, 7], \
        "4 and 5 are lost, and said so; 1..3 not delivered twice"
    assert sequencer.seen(ROOM)[1] == 7


async def test_a_live_message_of_a_forked_epoch_rewinds_delivery_to_the_base() -> None:
    """Issue 29: a failover's new primary numbered other messages than the old one had
    acknowledged under the same seqs; members that had the old ones dropped the new ones as
    duplicates."""
    _, sequencer, emitted = await _setup(0)
    sequencer.track(ROOM, "old", 0)
    for seq in (1, 2, 3, 4):
        sequencer.accept(_message(seq, "old"))
    sequencer.accept(_message(3, "new.2"))  # the new primary had up to 2
    sequencer.accept(_message(5, "old"))  # the old primary, late: its history is left
    sequencer.accept(_message(4, "new.2"))
    assert emitted == [1, 2, 3, 4, "fork@2", 3, 4]
    assert sequencer.position(ROOM) == ("new.2", 4)


async def test_a_fork_seen_after_an_outage_is_reported_before_the_new_epochs_messages() -> None:
    broker, sequencer, emitted = await _setup(3)
    sequencer.track(ROOM, "an-epoch-before-the-fork", 9)  # delivered up to 9 in the old one
    await broker.publish_message(ROOM, b'{"seq":', (), 3)  # the new history shares 1..3
    broker._logs[ROOM].epoch = "forked.3"
    sequencer.recover()
    await sequencer.idle()
    assert emitted == ["fork@3", 4]



class _FailingHistory(MemoryBroker):
    """A broker whose first `failures` history reads raise an error that is not Redis's."""

    def __init__(self, failures: int) -> None:
        super().__init__(capacity=100, capacity_bytes=2**20)
        self.failures = failures
        self.reads = 0

    async def history(self, *args: Any, **kwargs: Any) -> HistoryWindow:
        self.reads += 1
        if self.reads <= self.failures:
            raise RuntimeError("a bug below the repair")
        return await super().history(*args, **kwargs)


async def _failing_setup(failures: int) -> tuple[_FailingHistory, Sequencer, Emitted]:
    broker = _FailingHistory(failures)
    for _ in range(6):
        await broker.publish_message(ROOM, b'{"seq":', (), 0)
    emitted: Emitted = []
    sequencer = Sequencer(broker, lambda p: emitted.append(p.seq), lambda *fork: None,
                          lambda room, first, last: emitted.append((first, last)), 100)
    return broker, sequencer, emitted


async def test_a_repair_whose_history_read_fails_releases_the_room_and_is_reported(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 30: an exception other than Unavailable in the repair left the room's cursor
    queued: every later message for the room waited forever, and nothing was logged."""
    monkeypatch.setattr("node.chat.sequencer.REPAIR_BACKOFF", 0.0)
    _, sequencer, emitted = await _failing_setup(failures=REPAIR_ATTEMPTS)
    before = FAILURES["gap repair"]
    sequencer.accept(_message(1))
    sequencer.accept(_message(4))  # a gap: 2 and 3 are fetched, and every fetch fails
    await asyncio.wait_for(sequencer.idle(), 5)
    sequencer.accept(_message(5))
    assert emitted == [1, (2, 3), 4, 5], "released, the gap told, and the room flows on"
    assert FAILURES["gap repair"] == before + REPAIR_ATTEMPTS
    assert "gap repair failed: RuntimeError('a bug below the repair')" in caplog.text


async def test_a_repair_that_fails_once_fills_the_gap_on_its_retry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("node.chat.sequencer.REPAIR_BACKOFF", 0.0)
    broker, sequencer, emitted = await _failing_setup(failures=1)
    sequencer.accept(_message(1))
    sequencer.accept(_message(4))
    await asyncio.wait_for(sequencer.idle(), 5)
    assert emitted == [1, 2, 3, 4] and broker.reads == 2
