"""The storm names why a client process could not start instead of failing on a closed pipe."""

from __future__ import annotations

import multiprocessing

from loadtest.storm import _answer


def test_a_client_process_is_heard_as_ready_or_with_its_reason() -> None:
    parent, child = multiprocessing.Pipe()
    child.send("ready")
    assert _answer(parent, 1) == "ready"
    child.send("its 20 clients did not all join within 60 s")
    assert _answer(parent, 1) == "its 20 clients did not all join within 60 s"


def test_a_silent_or_exited_client_process_is_named_as_such() -> None:
    parent, child = multiprocessing.Pipe()
    assert _answer(parent, 0.01) == "nothing in 0.01 s"
    child.close()
    assert _answer(parent, 1) == "it exited (its traceback is above)"
