"""Garbage collection for a process that holds tens of thousands of long-lived sessions.

CPython's full collection walks every object it tracks, and runs each time the heap has
grown by a quarter since the last one. A node holding 26,000 sessions tracks about a million
objects: one full collection took 0.2-0.8 s on the development machine, and a node admitting
a reconnect storm ran about twenty of them, every delivery waiting meanwhile, and found
nothing to free (docs/performance-history.md, *Admission in a storm*): a session's objects
are freed by reference counting when it ends. So the survivors of each full collection are
frozen (`gc.freeze`): the next one walks only what arrived since. And a full collection is
considered after every second collection of the middle generation instead of every
eleventh, so that each walks what arrived over two of them, not eleven: in a storm, where
everything that arrives lives (admitted sessions), a survivor's longest pause fell from
143-196 ms to 63-104 ms (docs/performance-history.md, *A dead node released a page at a
time, and shorter full collections*). Garbage in reference cycles among frozen objects would
stay; once every `REVIEW` seconds the frozen objects are handed back after a full
collection, and the next one walks everything once. The process-wide figures below are in
/metrics.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

REVIEW = 3600.0  # seconds between two full collections that walk the frozen objects too
# The oldest generation's threshold: a full collection is considered once more collections of
# the middle generation than this ran since the last one (CPython's default: 10).
MIDDLE_PER_FULL = 1
FULL = 2  # the oldest generation: a full collection


@dataclass
class Heap:
    """Counts full collections and freezes their survivors; one per process (`HEAP`)."""

    full_collections: int = 0
    full_seconds: float = 0.0  # spent in them, in all
    longest: float = 0.0  # the longest one, in seconds
    _started: float = 0.0
    _reviewed: float = field(default_factory=time.monotonic)
    _installed: bool = False

    def install(self) -> None:
        """Freeze what the process set up, and the survivors of every full collection from
        now on. Idempotent."""
        if not self._installed:
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, MIDDLE_PER_FULL)
            gc.freeze()
            gc.callbacks.append(self._observe)
            self._installed = True

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != FULL:
            return
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        pause = now - self._started
        self.full_collections += 1
        self.full_seconds += pause
        self.longest = max(self.longest, pause)
        if time.monotonic() - self._reviewed >= REVIEW:
            self._reviewed = time.monotonic()
            gc.unfreeze()  # the next full collection looks at everything again
        else:
            gc.freeze()


HEAP = Heap()
