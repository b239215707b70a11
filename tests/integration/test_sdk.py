"""The JavaScript SDK's unit tests (tests/js/chat-client.test.mjs), run by Node.js's own test
runner against real clusters (one in anonymous mode, one in JWT mode), and its documented
Node.js example (docs/client-js.md) as written."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cluster import Cluster
from tests.docs_blocks import blocks_run_by

ROOT = Path(__file__).resolve().parents[2]
NODE_PATH = "/usr/share/nodejs"  # Debian's node-ws
JWT_SECRET = "sdk-test-secret-of-32-bytes-or-more!"

if not (shutil.which("node") and os.path.isdir(f"{NODE_PATH}/ws")):
    pytest.skip("Node.js and Debian's node-ws are not installed (gateway/bootstrap.sh)",
                allow_module_level=True)


@pytest.mark.timeout(120)
def test_the_sdk_passes_its_own_tests_against_real_nodes(
        make_cluster: Callable[..., Cluster]) -> None:
    anonymous = make_cluster(nodes=1, node_args=["--presence-grace=1"])
    jwt = make_cluster(nodes=1, node_env={"CHAT_JWT_SECRET": JWT_SECRET})
    env = os.environ | {"NODE_PATH": NODE_PATH, "CHAT_URL": anonymous.ws_url,
                        "CHAT_JWT_URL": jwt.ws_url, "CHAT_JWT_SECRET": JWT_SECRET}
    run = subprocess.run(["node", "--test", "tests/js/"], cwd=ROOT, env=env, timeout=100,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# skipped 0" in run.stdout, run.stdout[-2000:]


@pytest.mark.timeout(60)
def test_the_documented_nodejs_example_runs_as_written(make_cluster: Callable[..., Cluster],
                                                       tmp_path: Path) -> None:
    """docs/client-js.md: hello.mjs saved from its js block, then its commands as written in
    that folder; the one change is the gateway's address (127.0.0.1:8080 in the text)."""
    cluster = make_cluster(nodes=1)
    code, commands = blocks_run_by("tests/integration/test_sdk.py")
    assert (code.language, commands.language) == ("js", "sh")
    (tmp_path / "hello.mjs").write_text(code.text)
    address = cluster.http_url.removeprefix("http://")
    output = ""
    for command, _ in commands.commands():
        run = subprocess.run(command.replace("127.0.0.1:8080", address), shell=True,
                             cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, f"{command}\n{run.stdout}{run.stderr}"
        output += run.stdout
    assert output.splitlines()[0].startswith("joined general on node1 (1 here)"), output
    assert "sent as message 1" in output and "[1] alice: hello from Node.js" in output, output
