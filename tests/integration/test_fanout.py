"""The fan-out benchmark runs end to end on a tiny cluster and reports a passing step, for
the chat cluster and, side by side, for the Socket.IO peers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
SMALL = ["--rooms", "3", "--members", "4", "--rates", "300", "--step-seconds", "1",
         "--workers", "1"]


def _fanout(*args: str, out: Path) -> tuple[str, dict[str, Any]]:
    run = subprocess.run([sys.executable, "-m", "loadtest.fanout", *SMALL, *args,
                          "--json", str(out)], capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, json.loads(out.read_text())


@pytest.mark.timeout(120)
def test_a_small_fanout_run_passes_for_both_sender_placements(tmp_path: Path) -> None:
    stdout, results = _fanout(out=tmp_path / "fanout.json")
    assert stdout.count("max passing: 300 deliveries/s") == 2, stdout
    runs = results["runs"]
    assert [run["spread"] for run in runs] == [True, False]
    assert runs[0]["placement"]["node2"]["senders"] > 0, "spread: node2 has senders"
    assert runs[1]["placement"]["node2"]["senders"] == 0, "concentrated: node1 sends all"
    step = runs[0]["steps"][0]
    assert step["passed"] is True and step["cpu_s"]["generator"] > 0
    for p99 in step["node_p99_ms"].values():  # read from each node's /metrics
        assert p99["publish"] is not None or p99["fanout"] is not None
    assert "inside the nodes, p99 at most" in stdout
    assert all(per_write >= 1 for per_write in step["frames_per_write"].values())
    assert "frames per write" in stdout


@pytest.mark.timeout(190)
@pytest.mark.parametrize("peer", ["socketio-node", "socketio-py"])
def test_a_peer_runs_beside_the_chat_cluster_and_the_ratios_are_printed(
        tmp_path: Path, peer: str) -> None:
    if peer == "socketio-node" and not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js and npm are not installed (apt-get install nodejs npm)")
    stdout, results = _fanout("--compare", peer, "--placement", "spread",
                              out=tmp_path / "compare.json")
    assert [run["system"] for run in results["runs"]] == ["chat", peer]
    assert all(run["max_passing_per_s"] == 300 for run in results["runs"]), stdout
    spread = results["comparison"]["spread"]
    assert spread["max_passing_ratio"] == 1.0
    assert set(spread["node_us_per_delivery"]["300.0"]) == {"chat", peer}
    assert len(spread["node_us_ratio_by_round"]["300.0"]) == 1  # one round
    assert "node CPU per delivery" in stdout and "(each round: " in stdout


@pytest.mark.timeout(120)
def test_room_shapes_run_one_after_another_and_are_summed_up(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "loadtest.fanout", "--shapes", "2x6,12x1",
                          "--placement", "spread", "--rates", "120", "--step-seconds", "1",
                          "--workers", "1", "--json", str(tmp_path / "shapes.json")],
                         capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = json.loads((tmp_path / "shapes.json").read_text())["runs"]
    assert [run_["shape"] for run_ in runs] == [{"members": 2, "rooms": 6},
                                                {"members": 12, "rooms": 1}]
    assert all(run_["max_passing_per_s"] == 120 for run_ in runs)
    assert runs[0]["rooms_per_node"] == [6, 6] and runs[1]["rooms_per_node"] == [1, 1]
    assert "room shapes at 120 deliveries/s" in run.stdout


@pytest.mark.timeout(120)
def test_a_run_on_a_redis_cluster_reports_each_redis_process(tmp_path: Path) -> None:
    stdout, results = _fanout("--redis-cluster", "--placement", "spread",
                              out=tmp_path / "sharded.json")
    assert "max passing: 300 deliveries/s" in stdout, stdout
    cpu = results["runs"][0]["steps"][0]["cpu_s"]
    primaries = [name for name in cpu if name.startswith("redis:")]
    replicas = [name for name in cpu if name.startswith("replica:")]
    assert len(primaries) == 3 and len(replicas) == 3 and "redis" not in cpu, cpu
    assert results["args"]["redis_cluster"] is True


@pytest.mark.timeout(120)
def test_idle_connections_report_memory_cpu_and_a_canary_through_the_gateway(
        tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "loadtest.fanout", "--idle", "40", "--nodes",
                          "1", "--gateway", "--idle-seconds", "1", "--json",
                          str(tmp_path / "idle.json")],
                         capture_output=True, text=True, timeout=110)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "idle.json").read_text())
    node = results["nodes"]["node1"]
    assert node["connections"] == 40 and node["kib_per_connection"] > 0, node
    assert "idle_cpu_percent" in node and set(results["cpu_percent"]) == {"node1", "nginx"}
    canary = results["canary"]
    assert canary["received"] == canary["sent"] > 0 and not canary["problems"], canary
    assert "then a canary beside them" in run.stdout


@pytest.mark.timeout(30)
def test_more_connections_than_a_process_may_open_are_refused_before_starting() -> None:
    run = subprocess.run([sys.executable, "-m", "loadtest.fanout", "--idle", "5000000",
                          "--nodes", "1"], capture_output=True, text=True, timeout=25)
    assert run.returncode != 0
    assert "a process may open" in run.stderr and "ulimit -Hn" in run.stderr, run.stderr


@pytest.mark.timeout(120)
def test_visitors_churn_between_rooms_during_the_steps(tmp_path: Path) -> None:
    stdout, results = _fanout("--placement", "spread", "--churn", "20",
                              out=tmp_path / "churn.json")
    assert "20 visitor joins/s" in stdout
    run = results["runs"][0]
    assert run["max_passing_per_s"] == 300, stdout  # the members' deliveries are unaffected
    # 12 members and 20 visitors joined once each, then ~20 visits in the 1 s step
    assert sum(run["joins_per_node"]) >= 12 + 20 + 10, run["joins_per_node"]
