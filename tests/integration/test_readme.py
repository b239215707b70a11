"""The shell commands of the README (quick start, talking by hand, the example) and of the
operations guide run as written. In CI this checkout is a fresh clone. The one change: the
gateway's port, 8080 in the text, is a free one (CHAT_GATEWAY_PORT for the launcher and the
example, the URL's port for the rest). `bash tests/run.sh` is left out: it runs this test."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.processes import free_port

ROOT = Path(__file__).parents[2]
FENCE = re.compile(r"```sh\n(.*?)```", re.DOTALL)
WAIT = 60.0


def _commands(document: str) -> Iterator[tuple[str, list[str]]]:
    """Each command of the document's sh blocks, with the `> ` lines typed into it."""
    for block in FENCE.findall((ROOT / document).read_text()):
        command: str | None = None
        typed: list[str] = []
        for line in block.splitlines():
            if line.startswith("> "):
                typed.append(line[2:])
                continue
            if command is not None:
                yield command, typed
            command, typed = line, []
        if command is not None:
            yield command, typed


def _read_until(process: subprocess.Popen[str], needle: str) -> str:
    """What the process printed, up to a line holding `needle` (bounded in time)."""
    seen = []
    deadline = time.monotonic() + WAIT
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} never came:\n{''.join(seen)}")


@pytest.mark.timeout(180)
def test_the_documented_commands_run_as_written() -> None:
    port = str(free_port())
    env = {**os.environ, "CHAT_GATEWAY_PORT": port}
    commands = [(c.replace(":8080", f":{port}"), typed)
                for document in ("README.md", "docs/operations.md")
                for c, typed in _commands(document)]
    assert [c for c, _ in commands][:2] == ["bash gateway/up.sh      # Redis + 3 nodes + nginx "
                                            "on 127.0.0.1; prints the URLs (Ctrl-C stops all)",
                                            "bash tests/run.sh       # install everything the "
                                            "tests need and run the full suite"]
    cluster = subprocess.Popen(commands[0][0], shell=True, executable="/bin/bash", cwd=ROOT,
                               env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        assert f"chat cluster up: http://127.0.0.1:{port}" in _read_until(cluster, "Ctrl-C")
        for command, typed in commands[2:]:
            _run(command, typed, env)
        cluster.send_signal(signal.SIGINT)
        assert cluster.wait(WAIT) == 0
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
        if cluster.stdout is not None:
            cluster.stdout.close()


def _run(command: str, typed: list[str], env: dict[str, str]) -> None:
    """One documented command: its lines typed in, its output checked for what it promises."""
    with subprocess.Popen(command, shell=True, executable="/bin/bash", cwd=ROOT, env=env,
                          text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as process:
        try:
            assert process.stdin is not None and process.stdout is not None
            for line in typed:
                process.stdin.write(line + "\n")
            process.stdin.flush()
            # An interactive session: wait for the answer to what was typed last, then end it.
            output = _read_until(process, '"type":"message"') if typed else ""
            process.stdin.close()
            output += process.stdout.read()  # to its end (the test's timeout bounds it)
            process.wait(WAIT)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, f"{command}\n{output}"
    if "chat_client.py" in command:
        assert "alice: hello" in output, output
