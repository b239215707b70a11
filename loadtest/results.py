"""Where every load tool writes its figures: one JSON file the capacity planner and the docs
read, saying what ran, when, with which command and arguments, on how many cores."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def save(path: Path, benchmark: str, tool: str, args: argparse.Namespace,
         body: dict[str, Any]) -> None:
    """Write `body` under the run's description; `tool` is the module (`loadtest.fanout`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "benchmark": benchmark,
        "command": " ".join([f"python -m {tool}", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    } | body, indent=2))
