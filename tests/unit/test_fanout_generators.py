"""A generator process that dies ends the fan-out run at once: its coordinator does not wait
out the answer timeout (minutes) with a cluster of thousands of sockets still up."""

from __future__ import annotations

import multiprocessing
import sys

import pytest

from loadtest.fanout import Generators

pytestmark = pytest.mark.timeout(20)


def test_a_generator_that_exited_without_answering_ends_the_gather() -> None:
    ctx = multiprocessing.get_context("spawn")
    generators = Generators()
    dead = ctx.Process(target=sys.exit, args=(3,))
    dead.start()
    dead.join(10)
    generators.processes.append(dead)
    generators.controls.append(ctx.Queue())
    generators.outs.append(ctx.Queue())
    with pytest.raises(RuntimeError, match="generator 1 exited \\(code 3\\)"):
        generators.gather()


def test_an_answer_already_given_is_taken_even_from_a_generator_gone_since() -> None:
    ctx = multiprocessing.get_context("spawn")
    generators = Generators()
    gone = ctx.Process(target=sys.exit, args=(0,))
    gone.start()
    gone.join(10)
    out = ctx.Queue()
    out.put("ready")
    generators.processes.append(gone)
    generators.outs.append(out)
    assert generators.gather() == ["ready"]
