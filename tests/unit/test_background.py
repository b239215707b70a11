"""Background tasks are held until they end, and only until then."""

from __future__ import annotations

import asyncio
import gc

from node.background import Background


async def test_a_spawned_task_is_held_until_it_ends_and_then_let_go() -> None:
    background = Background()
    release = asyncio.Event()
    ran: list[str] = []

    async def work() -> None:
        await release.wait()
        ran.append("done")

    task = background.spawn(work())
    del task
    gc.collect()  # nothing else references it: the holder must
    assert list(background) and bool(background)
    release.set()
    await asyncio.gather(*background)
    await asyncio.sleep(0)  # the done callback runs after the task ends
    assert ran == ["done"] and not background and list(background) == []
