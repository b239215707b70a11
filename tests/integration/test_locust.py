"""The Locust smoke run: headless, through the gateway of a real local cluster."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import websocket

from gateway.cluster import Cluster

LOCUSTFILE = Path(__file__).parents[2] / "loadtest" / "locustfile.py"


def run_locust(cluster: Cluster, out: Path, *options: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """One headless Locust run against the cluster's gateway, reports under `out`."""
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
         "--host", cluster.http_url, "--csv", str(out / "run"), "--html", str(out / "run.html"),
         *options],
        capture_output=True, text=True, timeout=60, cwd=out, env={**os.environ, **(env or {})})


def stats(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "run_stats.csv", newline="") as rows:
        return {row["Name"]: row for row in csv.DictReader(rows)}


@pytest.mark.timeout(90)
def test_smoke_run_delivers_with_churn_and_no_failure(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = make_cluster(nodes=2)
    nodes = ",".join(cluster.node_url(i) for i in (1, 2))
    run = run_locust(cluster, tmp_path, "--users", "30", "--spawn-rate", "15",
                     "--run-time", "11s", "--chat-rooms", "5", "--chat-skew", "1",
                     "--chat-rate", "30", "--chat-session", "6", "--chat-away", "1",
                     "--chat-metrics", nodes)
    assert run.returncode == 0, run.stderr[-3000:]
    for index in (1, 2):  # each node's own latency, read from its /metrics
        assert f"inside {cluster.node_url(index)}, p99 at most (ms): publish" in run.stderr
    rows = stats(tmp_path)
    assert int(rows["delivery"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["connect"]["Request Count"]) > 30  # churned users came back
    assert {"auth", "join"} <= rows.keys()
    assert (tmp_path / "run.html").stat().st_size > 0


@pytest.mark.timeout(60)
def test_errors_fail_the_run_named_by_code(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    cluster = make_cluster(nodes=1, node_args=["--max-text", "100"])
    run = run_locust(cluster, tmp_path, "--users", "3", "--spawn-rate", "3",
                     "--run-time", "3s", "--chat-rate", "60", "--chat-size", "101")
    assert run.returncode == 1
    assert "no message was delivered" in run.stderr
    rows = stats(tmp_path)
    assert int(rows["text_too_long"]["Failure Count"]) > 0


@pytest.mark.timeout(60)
def test_users_mint_their_tokens_against_a_cluster_in_jwt_mode(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    secret = {"CHAT_JWT_SECRET": "locust-test-secret-of-32-bytes-or-more"}
    cluster = make_cluster(nodes=2, node_env=secret)
    anonymous = websocket.create_connection(cluster.ws_url, timeout=5)
    anonymous.send(json.dumps({"type": "auth", "name": "no-token"}))
    assert json.loads(anonymous.recv())["code"] == "auth_failed", "the cluster needs tokens"
    anonymous.close()
    run = run_locust(cluster, tmp_path, "--users", "10", "--spawn-rate", "10",
                     "--run-time", "4s", "--chat-rooms", "2", "--chat-rate", "60", env=secret)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = stats(tmp_path)
    assert int(rows["auth"]["Request Count"]) >= 10
    assert int(rows["delivery"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
