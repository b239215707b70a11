"""The shared history snapshots: one per room state, within a byte budget."""

from __future__ import annotations

from node.backends.broker import HistoryWindow
from node.chat.history_snapshots import HistorySnapshots, Snapshot


def _snapshot(seq: int, size: int, epoch: str = "e") -> Snapshot:
    return Snapshot.of(HistoryWindow([b"x" * (size - 2)], seq, epoch, 1))  # "[" + "]"


def test_a_snapshot_serves_only_the_room_state_it_was_made_of() -> None:
    snapshots = HistorySnapshots(max_bytes=1000)
    snapshots.put("r", _snapshot(3, 10), 0)
    assert snapshots.get("r", ("e", 3)) is not None
    assert snapshots.get("r", ("e", 4)) is None, "a newer message"
    assert snapshots.get("r", ("f", 3)) is None, "another incarnation of the history"
    assert snapshots.get("r", None) is None, "the node does not deliver the room in order"
    assert snapshots.get("other", ("e", 3)) is None


def test_the_least_recently_used_go_first_past_the_budget_to_the_byte() -> None:
    snapshots = HistorySnapshots(max_bytes=300)
    for room in ("a", "b", "c"):
        snapshots.put(room, _snapshot(1, 100), 0)
    assert snapshots.size == 300
    assert snapshots.get("a", ("e", 1)) is not None  # a is used: b is now the oldest
    snapshots.put("d", _snapshot(1, 2), 0)
    assert snapshots.get("b", ("e", 1)) is None and snapshots.size == 202
    snapshots.put("a", _snapshot(2, 50), 0)  # a room's newer state replaces its older one
    assert snapshots.size == 152
    snapshots.put("big", _snapshot(1, 301), 0)  # never kept: larger than the whole budget
    assert snapshots.get("big", ("e", 1)) is None and snapshots.size == 152


def test_an_edit_drops_the_snapshot_and_a_window_read_before_it_is_not_kept() -> None:
    snapshots = HistorySnapshots(1000)
    snapshots.put("r", _snapshot(3, 10), snapshots.edits("r"))
    before = snapshots.edits("r")
    snapshots.edited("r")  # a message deleted: same seq, other history
    assert snapshots.get("r", ("e", 3)) is None
    snapshots.put("r", _snapshot(3, 10), before)  # read before the deletion
    assert snapshots.get("r", ("e", 3)) is None
    snapshots.put("r", _snapshot(3, 10), snapshots.edits("r"))
    assert snapshots.get("r", ("e", 3)) is not None
