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
    assert json.loads(out.read_text())["steps"][0]["passed"] is True
