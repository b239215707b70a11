"""Interop kept honest: the Python client library, the Locust users and the JavaScript SDK
play the same protocol scenarios (tests/protocol_scenarios.json) against a scripted server,
and must react as each scenario says: resume, paging a resume's gap, `recovered: false`,
presence gaps, `messages_lost`, `server_shutdown.retryAfterMs`, a refused upgrade's
Retry-After, rate limits, exactly-once resends and final closes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.client import ChatClient, SendFailed
from tests import scripted_server

ROOT = Path(__file__).resolve().parents[2]
NODE_PATH = "/usr/share/nodejs"  # Debian's node-ws
SCENARIOS = scripted_server.scenarios()
# What the Locust users count as failures by design, beside the refusals a scenario expects.
LOCUST_ACCOUNTING = {"not_recovered", "missing_presence", "messages_lost", "connect"}


def _for(client: str) -> list[dict[str, Any]]:
    return [s for s in SCENARIOS.values() if client in s.get("only", [client])]


@pytest.fixture(scope="module")
def scripted() -> Iterator[str]:
    """The scripted server on a free loopback port, on a loop of its own in a thread."""
    loop = asyncio.new_event_loop()
    started = asyncio.run_coroutine_threadsafe(scripted_server.start(), loop)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, base = started.result(timeout=10)
    yield base
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _final_close(name: str) -> int:
    """The close code a scenario ends with."""
    return int(SCENARIOS[name]["connections"][-1]["steps"][-1]["close"])


def _server_saw(base: str, scenario: str, client: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/s/{scenario}/{client}/result", timeout=5) as answer:
        return dict(json.load(answer))


def _check(base: str, name: str, client: str, reported: dict[str, Any]) -> None:
    """The client followed the script to its end, and reported what the scenario expects."""
    assert "error" not in reported, reported["error"]
    saw = _server_saw(base, name, client)
    scenario = SCENARIOS[name]
    assert saw == {"connections": len(scenario["connections"]), "finished": True,
                   "strayed": []}, saw
    for key, wanted in scenario["expect"].items():
        if key in reported:
            assert reported[key] == wanted, (key, reported)


def _played(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def played_by_js(scripted: str) -> dict[str, Any]:
    if not (shutil.which("node") and os.path.isdir(f"{NODE_PATH}/ws")):
        pytest.skip("Node.js and Debian's node-ws are not installed (gateway/bootstrap.sh)")
    return _played(["node", "tests/js/play_scenarios.mjs", scripted, json.dumps(_for("js"))],
                   env=os.environ | {"NODE_PATH": NODE_PATH})


@pytest.fixture(scope="module")
def played_by_locust(scripted: str) -> dict[str, Any]:
    return _played([sys.executable, "-m", "tests.locust_scenarios", scripted,
                    json.dumps(_for("locust"))])


@pytest.mark.parametrize("name", [s["name"] for s in _for("js")])
def test_the_javascript_sdk(scripted: str, played_by_js: dict[str, Any], name: str) -> None:
    _check(scripted, name, "js", played_by_js[name])


@pytest.mark.parametrize("name", [s["name"] for s in _for("locust")])
def test_the_locust_users(scripted: str, played_by_locust: dict[str, Any], name: str) -> None:
    reported = played_by_locust[name]
    failures = reported.pop("failures")
    assert "duplicate_delivery" not in failures and "missing_delivery" not in failures, failures
    reported["notRecovered"] = "not_recovered" in failures
    reported["refused"] = [f for f in failures
                           if f not in LOCUST_ACCOUNTING and not f.startswith("close ")]
    assert reported.pop("finalClose") == _final_close(name)
    _check(scripted, name, "locust", reported)


async def _python_plays(base: str, name: str) -> dict[str, Any]:
    url = f"{base.replace('http', 'ws', 1)}/s/{name}/python/ws"
    reported: dict[str, Any] = {"delivered": [], "notRecovered": False, "lost": [],
                                "refused": [], "acknowledged": []}
    chat = ChatClient(url, "alice", "general")
    await chat.start()
    try:
        for text in SCENARIOS[name].get("say", []):
            try:
                reported["acknowledged"].append(await chat.send(text))
            except SendFailed as refused:
                reported["refused"].append(refused.code)
        async for event in chat.events():
            if event["type"] == "message":
                reported["delivered"].append(event["seq"])
            elif event["type"] == "room_joined" and event.get("recovered") is False:
                reported["notRecovered"] = True
            elif event["type"] == "messages_lost":
                reported["lost"].append([event["from"], event["to"]])
            elif event["type"] == "closed":
                assert event["reason"] == f"closed by the server with {_final_close(name)}"
    finally:
        await chat.close()
    return reported | {"members": sorted(chat.members), "userCount": chat.user_count}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", [s["name"] for s in _for("python")])
async def test_the_python_client(scripted: str, name: str) -> None:
    _check(scripted, name, "python", await _python_plays(scripted, name))
