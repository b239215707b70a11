"""Work a component starts and does not await where it starts it, and what happens when such
work fails: it is logged with its purpose and counted (`chat_background_failures` in
/metrics), never dropped with its task.

The event loop holds tasks only weakly: a task nobody references may be collected before it
ends. Each component keeps its own such tasks here until they end, and waits for or cancels
them the way its shutdown needs (iterating gives the ones still running). A loop the node
needs for its whole life runs `Supervised`: restarted with backoff after a failure, the node
not ready meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from node.backoff import Backoff

log = logging.getLogger("node.background")

# Background work that ended in an exception, by purpose, in this process (one node per
# process in production; tests that run several see their sum).
FAILURES: Counter[str] = Counter()


def report_failure(purpose: str, error: BaseException) -> None:
    """Log a background failure with its traceback and count it."""
    FAILURES[purpose] += 1
    log.error("%s failed: %r", purpose, error, exc_info=error)


class Background:
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], purpose: str) -> asyncio.Task[None]:
        """Run `work` as a task named `purpose`, kept until it ends; an exception it ends
        with is reported under that purpose."""
        task = asyncio.get_running_loop().create_task(work, name=purpose)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            report_failure(task.get_name(), error)

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(list(self._tasks))

    def __bool__(self) -> bool:
        return bool(self._tasks)


class Supervised:
    """A loop that runs until cancelled. When it raises, the failure is reported, the loop
    is `healthy` no more (the node answers /readyz 503) and starts again after a backoff; it
    is healthy again once it has run `settle` seconds since its last restart."""

    def __init__(self, purpose: str, loop: Callable[[], Coroutine[Any, Any, None]],
                 settle: float) -> None:
        self.purpose = purpose
        self._loop = loop
        self._settle = settle
        self._unhealthy_until = 0.0

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self._unhealthy_until

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            started = time.monotonic()
            try:
                await self._loop()
                return
            except Exception as error:  # a bug must not end the loop while the node looks ready
                report_failure(self.purpose, error)
                if time.monotonic() - started > self._settle:
                    backoff.reset()  # it had run well: a fresh fault, not a repeated one
                delay = backoff.next_delay()
                self._unhealthy_until = time.monotonic() + delay + self._settle
                await asyncio.sleep(delay)
