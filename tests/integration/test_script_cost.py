"""The publish script's Redis CPU tool (docs/performance.md) runs and prints both cases."""

from __future__ import annotations

import re
import subprocess
import sys


def test_the_script_cost_tool_prints_the_cost_of_a_publish_in_both_modes() -> None:
    run = subprocess.run([sys.executable, "-m", "loadtest.script_cost", "--calls", "300",
                          "--rounds", "1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    costs = re.findall(r"round 1  (S?PUBLISH) +([\d.]+) µs", run.stdout)
    assert [command for command, _ in costs] == ["PUBLISH", "SPUBLISH"], run.stdout
    assert all(float(cost) > 0 for _, cost in costs), run.stdout
