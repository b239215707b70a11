"""The reconnect-storm tool end to end on a small cluster: node1 killed, its clients back on
node2 with nothing lost. A smoke of `python -m loadtest.storm`; its figures are in
docs/performance.md, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.timeout(150)
def test_a_small_storm_brings_every_client_of_the_killed_node_back(tmp_path: Path) -> None:
    out = tmp_path / "storm.json"
    run = subprocess.run([sys.executable, "-m", "loadtest.storm", "--clients", "120",
                          "--rooms", "12", "--rate", "24", "--settle", "1", "--storm", "4",
                          "--drain", "10", "--json", str(out)],
                         capture_output=True, text=True, timeout=140)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["clients"] == 120 and 0 < result["moved"] < 120, result
    assert result["resumed"] == result["moved"] == result["recovered_true"], result
    assert result["accepted"] > 0 and result["clients_missing_or_misordered"] == 0, result
    assert "resumed on the others" in run.stdout
    assert "in the observer's 10 rooms (a process of their own)" in run.stdout
