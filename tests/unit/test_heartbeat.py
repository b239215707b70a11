"""The heartbeat's slices: every connection once per interval, the interval's work spread."""

from __future__ import annotations

import uuid
from typing import cast

from node.chat.heartbeat import slices_of
from node.chat.session import Session


class Held:
    """Stands for a session: the slicing only reads its id."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex


def held(count: int) -> list[Session]:
    return cast(list[Session], [Held() for _ in range(count)])


def test_every_session_is_in_exactly_one_slice_and_the_slices_are_even() -> None:
    sessions = held(30_000)
    slices = slices_of(sessions, 300)
    assert sorted(map(id, (s for piece in slices for s in piece))) == sorted(map(id, sessions))
    assert max(map(len, slices)) < 1.5 * 30_000 / 300, "no slice carries a burst"


def test_a_session_keeps_its_slice_from_one_interval_to_the_next() -> None:
    sessions = held(1_000)
    first = slices_of(sessions, 300)
    newcomers = held(500)
    second = slices_of([*newcomers, *sessions[::2]], 300)
    for index, piece in enumerate(first):
        assert {id(s) for s in piece if s in sessions[::2]} <= {id(s) for s in second[index]}
