"""A generator process that dies ends the fan-out run at once: its coordinator does not wait
out the answer timeout (minutes) with a cluster of thousands of sockets still up."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from loadtest.fanout import Generators

pytestmark = pytest.mark.timeout(20)


def _gone(code: int, *answers: str) -> Generators:
    """Generators of one process that has exited with `code`, having answered `answers`."""
    ctx = multiprocessing.get_context("spawn")
    gone = ctx.Process(target=sys.exit, args=(code,))
    gone.start()
    gone.join(10)
    out = ctx.Queue()
    for answer in answers:
        out.put(answer)
    return Generators(processes=[gone], controls=[ctx.Queue()], outs=[out])


def test_a_generator_that_exited_without_answering_ends_the_gather() -> None:
    with pytest.raises(RuntimeError, match="generator 1 exited \\(code 3\\)"):
        _gone(3).gather()


def test_an_answer_already_given_is_taken_even_from_a_generator_gone_since() -> None:
    assert _gone(0, "ready").gather() == ["ready"]
