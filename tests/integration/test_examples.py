"""The runnable example of docs/examples works against a real cluster, as the README runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "chat_client.py"


def test_the_example_client_joins_says_and_hears(make_cluster) -> None:
    cluster = make_cluster(nodes=2)
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), "--url", cluster.ws_url, "--name", "alice",
         "--say", "hello", "--listen", "1"],
        capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("joined general on node")
    assert "sent as message 1" in lines and "[1] alice: hello" in lines
