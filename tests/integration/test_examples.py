"""The runnable example of docs/examples works against a real cluster, as the README runs it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.processes import LOOPBACK, free_port
from gateway.tokens import new_hook_secret
from node.hooks.signing import Signer

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


RECEIVER = Path(__file__).parents[2] / "docs" / "examples" / "hook_receiver.py"


def test_the_example_backend_filters_verifies_and_deduplicates(tmp_path) -> None:
    """docs/examples/hook_receiver.py as a process: it masks and blocks words, refuses a
    name, prints each webhook once, and answers 401 to a body changed after signing."""
    secret = new_hook_secret()
    port = free_port()
    log = tmp_path / "receiver.log"
    with log.open("w") as output:
        receiver = subprocess.Popen(
            [sys.executable, str(RECEIVER), "--port", str(port)], stdout=output,
            stderr=subprocess.STDOUT, env={**os.environ, "CHAT_HOOK_SECRET": secret})
    try:
        wait_until_listening(port)
        signer = Signer(secret)

        def post(path: str, body: dict[str, Any], webhook_id: str = "hook_1",
                 tamper: bool = False) -> tuple[int, bytes]:
            data = json.dumps(body).encode()
            headers = signer.headers(webhook_id, data)
            request = urllib.request.Request(
                f"http://{LOOPBACK}:{port}/{path}", data=data + (b" " if tamper else b""),
                headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as refused:
                return refused.code, refused.read()

        message = {"room": "general", "userId": "u1", "name": "alice", "text": "darn it"}
        assert json.loads(post("publish", message)[1]) == {"result": "replace", "text": "d*** it"}
        blocked = json.loads(post("publish", {**message, "text": "buy SPAM"})[1])
        assert (blocked["result"], blocked["code"]) == ("reject", "blocked_word")
        assert json.loads(post("publish", {**message, "text": "hi"})[1]) == {"result": "accept"}
        assert post("publish", message, tamper=True)[0] == 401
        assert json.loads(post("connect", {"address": "1", "name": "Admin"})[1])["result"] == \
            "reject"
        event = {"id": "evt_1", "type": "message", "room": "general", "timestamp": "t",
                 "data": {"seq": 1}}
        assert post("events", event, "evt_1")[0] == 204
        assert post("events", event, "evt_1")[0] == 204  # a redelivery: taken, not acted on
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    printed = [line for line in log.read_text().splitlines() if line.startswith("{")]
    assert [json.loads(line)["id"] for line in printed] == ["evt_1"]


def wait_until_listening(port: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the example backend did not start"
            time.sleep(0.05)
