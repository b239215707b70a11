"""Reading what a process prints, bounded in time."""

from __future__ import annotations

import os
import selectors
import subprocess
import time


def read_until(process: subprocess.Popen[bytes], needle: str, timeout: float) -> str:
    """What the process printed up to `needle`, within `timeout` seconds. Read unbuffered, so
    that what select() saw is what is read."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while needle.encode() not in seen and (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            if not (chunk := os.read(process.stdout.fileno(), 65536)):
                break  # it exited
            seen += chunk
    text = seen.decode(errors="replace")
    assert needle in text, f"{needle!r} never came within {timeout:.0f} s:\n{text[-3000:]}"
    return text
