"""The fan-out benchmark runs end to end on a tiny cluster and reports a passing step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.timeout(120)
def test_a_small_fanout_run_passes_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtest.fanout", "--rooms", "3", "--members", "4",
         "--rates", "300", "--step-seconds", "1", "--workers", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "max passing: 300 deliveries/s" in run.stdout, run.stdout
    step = json.loads(out.read_text())["steps"][0]
    assert step["passed"] is True
    for p99 in step["node_p99_ms"].values():  # read from each node's /metrics
        assert p99["publish"] is not None or p99["fanout"] is not None
    assert "inside the nodes, p99 at most" in run.stdout
