"""Background tasks are held until they end, and only until then; a failure is never
dropped with its task; a loop the node needs comes back after a failure."""

from __future__ import annotations

import asyncio
import gc

import pytest

from node.background import FAILURES, Background, Supervised
from node.metrics import Metrics


async def test_a_spawned_task_is_held_until_it_ends_and_then_let_go() -> None:
    background = Background()
    release = asyncio.Event()
    ran: list[str] = []

    async def work() -> None:
        await release.wait()
        ran.append("done")

    task = background.spawn(work(), "test work")
    del task
    gc.collect()  # nothing else references it: the holder must
    assert list(background) and bool(background)
    release.set()
    await asyncio.gather(*background)
    await asyncio.sleep(0)  # the done callback runs after the task ends
    assert ran == ["done"] and not background and list(background) == []


async def test_a_failed_task_is_logged_with_its_purpose_and_counted_in_metrics(
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 30: Background.spawn dropped task exceptions."""
    background, before = Background(), FAILURES["test failure"]

    async def work() -> None:
        raise ValueError("broken")

    task = background.spawn(work(), "test failure")
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # the done callback runs after the task ends
    assert FAILURES["test failure"] == before + 1
    assert "test failure failed: ValueError('broken')" in caplog.text
    assert "Traceback" in caplog.text
    exposition = Metrics().exposition().decode()
    assert f'chat_background_failures_total{{purpose="test failure"}} {before + 1}.0' \
        in exposition


async def test_a_cancelled_task_is_no_failure() -> None:
    background, before = Background(), sum(FAILURES.values())
    task = background.spawn(asyncio.sleep(10), "test sleep")
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert sum(FAILURES.values()) == before


async def test_a_supervised_loop_that_raises_is_unhealthy_then_restarted(
        caplog: pytest.LogCaptureFixture) -> None:
    """Issue 30: the heartbeat loop was not supervised: one exception ended the node's pings."""
    runs: list[int] = []
    again = asyncio.Event()

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("once")
        again.set()
        await asyncio.sleep(3600)

    supervised = Supervised("test loop", loop, settle=3600)
    assert supervised.healthy
    task = asyncio.create_task(supervised.run())
    try:
        await asyncio.wait_for(again.wait(), 5)
        assert runs == [0, 1], "restarted after the failure"
        assert not supervised.healthy, "not healthy until it has run `settle` seconds"
        assert "test loop failed: RuntimeError('once')" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_supervised_loop_is_healthy_again_once_it_settled() -> None:
    again = asyncio.Event()

    async def loop() -> None:
        if not again.is_set():
            again.set()
            raise RuntimeError("once")
        await asyncio.sleep(3600)

    supervised = Supervised("test loop", loop, settle=0.0)
    task = asyncio.create_task(supervised.run())
    try:
        await asyncio.wait_for(again.wait(), 5)
        while not supervised.healthy:  # after the backoff (at most 0.1 s) and no settle
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
