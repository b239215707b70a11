"""A node's presence writes pass together; its resync passes alone."""

from __future__ import annotations

import asyncio

import pytest

from node.chat.resync_gate import ResyncGate


@pytest.mark.timeout(5)
async def test_a_resync_waits_for_writes_in_flight_and_new_writes_wait_for_it() -> None:
    gate, order = ResyncGate(), []
    write_done, resync_done = asyncio.Event(), asyncio.Event()

    async def write(name: str, until: asyncio.Event | None = None) -> None:
        async with gate.write():
            order.append(f"{name} in")
            if until is not None:
                await until.wait()
            order.append(f"{name} out")

    async def resync() -> None:
        async with gate.resync():
            order.append("resync in")
            await resync_done.wait()
            order.append("resync out")

    first = asyncio.create_task(write("w1", write_done))
    await asyncio.sleep(0)
    second = asyncio.create_task(write("w2"))  # writes pass together
    await asyncio.sleep(0)
    syncing = asyncio.create_task(resync())
    await asyncio.sleep(0)
    third = asyncio.create_task(write("w3"))  # waits for the resync
    await asyncio.sleep(0.01)
    assert order == ["w1 in", "w2 in", "w2 out"], "the resync waits for w1"
    write_done.set()
    await asyncio.sleep(0.01)
    assert order[-2:] == ["w1 out", "resync in"] and "w3 in" not in order
    resync_done.set()
    await asyncio.gather(first, second, syncing, third)
    assert order[-3:] == ["resync out", "w3 in", "w3 out"]
