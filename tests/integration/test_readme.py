"""The shell blocks of the docs marked `<!-- run: tests/integration/test_readme.py -->` run as
written against the quick start's cluster (README's first command). In CI this checkout is a
fresh clone. The one change: the gateway's port, 8080 in the text, is a free one
(CHAT_GATEWAY_PORT for the launcher and the example, the URL's port for the rest). What the
commands write into the checkout (the planner's `report/`) is removed afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from gateway.processes import free_port
from tests.docs_blocks import ROOT, blocks_run_by, quick_start
from tests.output import read_until

WAIT = 60.0
WRITTEN = [ROOT / "report"]  # where documented commands write (untracked)


@pytest.mark.timeout(240)
def test_the_documented_commands_run_as_written() -> None:
    port = str(free_port())
    env = {**os.environ, "CHAT_GATEWAY_PORT": port}
    commands = [(c.replace(":8080", f":{port}"), typed)
                for block in blocks_run_by("tests/integration/test_readme.py")
                for c, typed in block.commands()]
    assert len(commands) >= 5, commands
    existed = [path for path in WRITTEN if path.exists()]
    cluster = subprocess.Popen(quick_start()[0], shell=True, executable="/bin/bash", cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        assert f"chat cluster up: http://127.0.0.1:{port}" in read_until(cluster, "Ctrl-C", WAIT)
        for command, typed in commands:
            _run(command, typed, env)
        cluster.send_signal(signal.SIGINT)
        assert cluster.wait(WAIT) == 0
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
        if cluster.stdout is not None:
            cluster.stdout.close()
        for path in [*WRITTEN, Path(f"/tmp/chat-cluster-{port}")]:  # the launcher's run dir
            if path not in existed:
                shutil.rmtree(path, ignore_errors=True)


def _run(command: str, typed: list[str], env: dict[str, str]) -> None:
    """One documented command: its lines typed in, its output checked for what it promises."""
    with subprocess.Popen(command, shell=True, executable="/bin/bash", cwd=ROOT, env=env,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as process:
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write("".join(f"{line}\n" for line in typed).encode())
            process.stdin.flush()
            # An interactive session: wait for the answer to what was typed last, then end it.
            output = read_until(process, '"type":"message"', WAIT) if typed else ""
            process.stdin.close()
            output += process.stdout.read().decode(errors="replace")  # to its end
            process.wait(WAIT)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, f"{command}\n{output}"
    if "chat_client.py" in command:
        assert "alice: hello" in output, output
    if "loadtest.capacity" in command:
        assert "nodes" in output, output
