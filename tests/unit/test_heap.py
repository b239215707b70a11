"""A full collection's survivors are left out of the next ones, and handed back once in a
while so that cyclic garbage among them is found."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from node import heap
from node.heap import Heap


@pytest.fixture
def installed() -> Iterator[Heap]:
    thresholds = gc.get_threshold()
    watched = Heap()
    watched.install()
    yield watched
    gc.callbacks.remove(watched._observe)
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_the_survivors_of_a_full_collection_are_frozen(installed: Heap) -> None:
    survivors = [[n] for n in range(10_000)]
    frozen = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() >= frozen + len(survivors)
    assert installed.full_collections == 1 and 0 < installed.longest <= installed.full_seconds
    Cyclic()
    assert gc.collect() >= 1, "young cyclic garbage is still found"


def test_a_review_hands_the_frozen_objects_back(installed: Heap,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    gc.collect()
    old = Cyclic()
    gc.collect()  # `old` is frozen now
    del old
    assert gc.collect() == 0, "frozen cyclic garbage waits for the review"
    monkeypatch.setattr(heap, "REVIEW", 0.0)
    gc.collect()  # the review: the frozen objects go back
    assert gc.get_freeze_count() == 0
    monkeypatch.setattr(heap, "REVIEW", 3600.0)
    assert gc.collect() >= 1, "the cycle is found by the next full collection"


def test_a_full_collection_follows_every_second_middle_one(installed: Heap) -> None:
    """CPython collects a generation once its count passes its threshold: the middle one
    every 11 young collections (701 new objects each), the full one every 11 middle ones by
    default (about 85,000 new objects), here every 2 (about 15,400)."""
    gc.collect()
    before = installed.full_collections
    kept = [[n] for n in range(40_000)]
    assert installed.full_collections - before >= 2, "the default would have run none yet"
    assert len(kept) == 40_000
