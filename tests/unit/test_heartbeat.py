"""The heartbeat: every connection pinged once per interval, the interval's work spread, and
only a client that left a ping unanswered closed for its silence."""

from __future__ import annotations

import time
import uuid
from typing import cast

from node.chat import disconnect
from node.chat.disconnect import Disconnect
from node.chat.heartbeat import ping, slices_of
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


class Pinged:
    """Stands for a session in `ping`: when it was last heard and pinged, what it got."""

    def __init__(self, heard_ago: float, pinged_ago: float | None) -> None:
        now = time.monotonic()
        self.last_pong = now - heard_ago
        self.pinged_at = 0.0 if pinged_ago is None else now - pinged_ago
        self.frames: list[bytes] = []
        self.closed: Disconnect | None = None

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close_soon(self, reason: Disconnect) -> None:
        self.closed = reason


TIMEOUT = 60.0


def _pinged(session: Pinged) -> Pinged:
    ping(cast(list[Session], [session]), TIMEOUT)
    return session


def test_a_client_silent_past_the_timeout_since_a_ping_is_closed() -> None:
    silent = _pinged(Pinged(heard_ago=61, pinged_ago=31))
    assert silent.closed is disconnect.PING_TIMEOUT and not silent.frames


def test_a_client_never_pinged_since_it_was_heard_is_pinged_not_closed() -> None:
    """The heartbeat of a node busy with thousands of arrivals came round to some of them
    only after the timeout: they were closed without ever having been asked."""
    for unasked in (Pinged(heard_ago=70, pinged_ago=None), Pinged(heard_ago=70, pinged_ago=75)):
        assert _pinged(unasked).closed is None and len(unasked.frames) == 1
        assert unasked.pinged_at > unasked.last_pong


def test_a_client_heard_within_the_timeout_is_pinged() -> None:
    alive = _pinged(Pinged(heard_ago=29, pinged_ago=30))
    assert alive.closed is None and len(alive.frames) == 1
