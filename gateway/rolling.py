"""Rolling restart: drain one node at a time and wait for its successor to be ready."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DRAIN_RETRY = 1.0
READY_TIMEOUT = 120.0
POLL = 0.2


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What a running `up` wrote down: its nodes, its admin token and its gateway."""

    nodes: list[str]
    admin_token: str
    gateway: str = ""

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        data = json.loads(path.read_text())
        return cls(nodes=data["nodes"], admin_token=data["admin_token"],
                   gateway=data.get("gateway", ""))

    def node_status(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(url, /readyz status or 0, /api/status body) of each node."""
        return [(url, _request(f"{url}/readyz")[0], _request(f"{url}/api/status")[1])
                for url in self.nodes]


def _request(url: str, method: str = "GET", token: str | None = None
             ) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except (urllib.error.URLError, OSError):
        return 0, {}


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(POLL)


def restart_node(url: str, token: str, say: Callable[[str], None]) -> None:
    """Drain the node at `url`, then wait until a new process answers ready there."""
    _, status = _request(f"{url}/api/status")
    old = status.get("instance")
    while True:
        code, body = _request(f"{url}/admin/drain", "POST", token)
        if code == 202:
            break
        if code == 409 and body.get("error") == "drain_in_progress":
            say(f"  {url}: another node is draining; waiting")
            time.sleep(DRAIN_RETRY)
            continue
        raise RuntimeError(f"{url} refused to drain: {code} {body}")
    say(f"  {status.get('node', url)} draining ({status.get('connections', '?')} clients)")

    def restarted() -> bool:
        code, body = _request(f"{url}/api/status")
        return (code == 200 and body.get("instance") != old
                and _request(f"{url}/readyz")[0] == 200)

    _wait(restarted, READY_TIMEOUT, f"{url} to come back ready")
    say(f"  {status.get('node', url)} restarted and ready")


def rolling_restart(state: ClusterState, say: Callable[[str], None] = print) -> None:
    for index, url in enumerate(state.nodes, start=1):
        say(f"[{index}/{len(state.nodes)}] restarting {url}")
        restart_node(url, state.admin_token, say)
    say("rolling restart complete")
