"""Tasks a component starts and does not await where it starts them.

The event loop holds tasks only weakly: a task nobody references may be collected before it
ends. Each component keeps its own such tasks here until they end, and waits for or cancels
them the way its shutdown needs (iterating gives the ones still running).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any


class Background:
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` as a task, kept until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(list(self._tasks))

    def __bool__(self) -> bool:
        return bool(self._tasks)
