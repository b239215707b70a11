"""The Jepsen-style checker of the fault schedules (tests/checker.py) finds what it is there
to find: a checker that cannot fail would pass every schedule."""

from __future__ import annotations

from dataclasses import replace

from node.client import ChatClient
from tests.checker import Member, Writer, check, view_complete


def _member(deliveries: list[tuple[str, int, str]], reports: list[float] | None = None
            ) -> Member:
    return Member(ChatClient("ws://127.0.0.1:9/ws", "m", "r"), list(deliveries),
                  reports or [])


def _writer(acks: list[tuple[str, float]]) -> Writer:
    return Writer(ChatClient("ws://127.0.0.1:9/ws", "w0", "r"), "w0", list(acks))


def test_an_acknowledged_message_never_delivered_nor_reported_is_lost() -> None:
    writer = _writer([("w0-1", 1.0), ("w0-2", 2.0)])
    verdict = check({"m": _member([("e", 1, "w0-1")])}, [writer], 0.0)
    assert verdict.lost == {"m": ["w0-2"]}
    assert not verdict.valid


def test_a_loss_report_after_the_acknowledgement_excuses_it() -> None:
    writer = _writer([("w0-1", 1.0), ("w0-2", 2.0)])
    verdict = check({"m": _member([("e", 1, "w0-1")], reports=[2.5])}, [writer], 0.0)
    assert verdict.valid
    assert verdict.reported == {"m": 1}


def test_duplicates_disorder_and_two_texts_under_one_seq_are_each_found() -> None:
    writer = _writer([("w0-1", 1.0), ("w0-2", 2.0)])
    twice = check({"m": _member([("e", 1, "w0-1"), ("e", 2, "w0-2"), ("e", 3, "w0-2")])},
                  [writer], 0.0)
    assert twice.duplicates == {"m": ["w0-2"]} and not twice.valid
    backwards = check({"m": _member([("e", 2, "w0-2"), ("e", 1, "w0-1")])}, [writer], 0.0)
    assert backwards.disorder == {"m": 1} and not backwards.valid
    forked = check({"a": _member([("e", 1, "w0-1"), ("e", 2, "w0-2")]),
                    "b": _member([("e", 1, "w0-2"), ("e", 2, "w0-1")])}, [writer], 0.0)
    assert forked.conflicts == {("e", 1): {"w0-1", "w0-2"}, ("e", 2): {"w0-1", "w0-2"}}


def test_a_new_epoch_may_number_again_from_its_base() -> None:
    writer = _writer([("w0-1", 1.0), ("w0-2", 2.0)])
    verdict = check({"m": _member([("e", 2, "w0-1"), ("f", 2, "w0-2")])}, [writer], 0.0)
    assert verdict.disorder == {"m": 0}


def test_a_writer_is_unavailable_for_its_longest_time_without_an_acknowledgement() -> None:
    writer = _writer([("w0-1", 1.0), ("w0-2", 1.5), ("w0-3", 6.0)])
    assert check({}, [writer], 0.5).unavailable == {"w0": 4.5}


def test_the_presence_view_is_complete_after_its_last_wrong_sample() -> None:
    samples = [(0.0, ["m -w0"]), (10.0, []), (11.0, ["m -w1"]), (13.25, []), (14.0, [])]
    assert view_complete(samples, 10.0) == (1.0, ["m -w1"])
    assert view_complete(samples[:2], 10.0) == (0.0, [])  # wrong only before the fault
    assert view_complete(samples[:3], 10.0) == (float("inf"), ["m -w1"])


def test_a_member_list_still_wrong_at_the_end_fails_the_verdict() -> None:
    verdict = check({}, [_writer([("w0-1", 1.0)])], 0.0)
    assert verdict.valid
    assert not replace(verdict, view_complete=float("inf")).valid
