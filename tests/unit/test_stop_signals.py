"""A stop signal reaches the launcher whatever its main thread is doing, holding the stop
event's own lock included (where a handler that set the event itself would deadlock)."""

from __future__ import annotations

import subprocess
import sys

IN_THE_LOCK = """
import os, signal, threading
from gateway.processes import stop_on_signals
stopping = threading.Event()
stopping_set_by_handler = {handler}
if stopping_set_by_handler:
    signal.signal(signal.SIGUSR1, lambda *_: stopping.set())
else:
    stop_on_signals(stopping, (signal.SIGUSR1,))
with stopping._cond:  # where stopping.wait() holds it
    os.kill(os.getpid(), signal.SIGUSR1)
    sum(range(1000))  # bytecodes: a Python-level handler runs among them
print("stopped" if stopping.wait(5) else "not stopped", flush=True)
"""


def _run(handler: bool) -> str:
    try:
        done = subprocess.run([sys.executable, "-c", IN_THE_LOCK.format(handler=handler)],
                              capture_output=True, text=True, timeout=4)
    except subprocess.TimeoutExpired:
        return "hung"
    return done.stdout.strip() or done.stderr


def test_a_signal_while_the_stop_event_is_locked_still_stops() -> None:
    assert _run(handler=False) == "stopped"


def test_setting_the_event_from_the_handler_would_hang_there() -> None:
    """Why the launcher does not: this is the deadlock it avoids."""
    assert _run(handler=True) == "hung"
