"""Admission: past --handshake-backlog unfinished chat handshakes (upgraded, no room_joined
yet) a node answers upgrades 503 with Retry-After at once, and takes them again as soon as a
handshake finishes: by joining a room, by ending, or by outliving --handshake-timeout."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.client import ChatClient
from tests.frames import upgrade
from tests.integration.test_metrics import _scrape


async def _status(node) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """One upgrade's answer (a 101's socket is closed at once: its handshake ends)."""
    return await upgrade(node.server.port)


async def _until_accepted(node) -> None:  # type: ignore[no-untyped-def]
    for _ in range(100):
        if (await _status(node))[0] == 101:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("upgrades stayed refused")


async def test_past_the_backlog_an_upgrade_gets_503_with_retry_after(make_node, connect) -> None:
    node = await make_node(handshake_backlog=2)
    first = await connect(node)
    await connect(node)  # two handshakes in progress: upgraded, not in a room
    status, rest = await _status(node)
    assert status == 503
    assert b"Retry-After: 1\r\n" in rest and b'"error": "overloaded"' in rest
    await first.auth("alice")
    await first.join("general")  # its handshake is done: room for one more
    assert (await _status(node))[0] == 101
    metrics = await _scrape(node)
    assert metrics["chat_upgrades_shed_total", ()] == 1
    assert metrics["chat_handshakes_unfinished", ()] >= 1


async def test_a_crowd_of_refused_upgrades_is_told_to_come_back_spread_out(make_node, connect
                                                                          ) -> None:
    node = await make_node(handshake_backlog=1)
    await connect(node)  # the backlog is full, and nothing finishes: a crowd builds up
    waits = []
    for _ in range(30):
        status, rest = await _status(node)
        assert status == 503
        waits.append(int(rest.split(b"Retry-After: ")[1].split(b"\r\n")[0]))
    assert waits[0] == 1 and max(waits) > 1 and len(set(waits)) > 3


async def test_a_handshake_that_outlives_the_timeout_no_longer_counts(make_node, connect
                                                                      ) -> None:
    node = await make_node(handshake_backlog=1, handshake_timeout=0.5)
    lingering = await connect(node)
    assert (await _status(node))[0] == 503
    await lingering.auth("bob")  # authenticated, never joins: counted until the timeout
    await _until_accepted(node)


async def test_a_handshake_that_ends_frees_its_place(make_node, connect) -> None:
    node = await make_node(handshake_backlog=1)
    client = await connect(node)
    assert (await _status(node))[0] == 503
    await client.close()
    await _until_accepted(node)


async def test_the_gateway_passes_a_full_node_over_and_then_the_503_on(make_cluster, open_ws
                                                                       ) -> None:
    cluster = make_cluster(nodes=2, node_args=["--handshake-backlog", "1"])
    for _ in range(2):  # one unfinished handshake on each node, wherever nginx puts them
        await open_ws(cluster.ws_url)
    status, rest = await upgrade(cluster.gateway_port)
    assert status == 503 and b"Retry-After: 1\r\n" in rest and b"overloaded" in rest


async def test_the_client_library_waits_as_long_as_retry_after_says(make_node, connect) -> None:
    node = await make_node(handshake_backlog=1)
    lingering = await connect(node)
    client = ChatClient(f"ws://127.0.0.1:{node.server.port}/ws", "carol", "general")
    starting = asyncio.create_task(client.start(timeout=20))
    try:
        async with asyncio.timeout(10):  # until its first attempt was refused
            while (await _scrape(node)).get(("chat_upgrades_shed_total", ()), 0) < 1:
                await asyncio.sleep(0.01)
        refused_at = asyncio.get_running_loop().time()
        await lingering.close()  # room again at once; the client must still wait its second
        await starting
        assert asyncio.get_running_loop().time() - refused_at >= 0.9
        assert client.connections == 1
    finally:
        await client.close()


@pytest.mark.timeout(90)
def test_the_admission_tool_measures_a_small_run(tmp_path: Path) -> None:
    out = tmp_path / "admission.json"
    run = subprocess.run([sys.executable, "-m", "loadtest.admission", "--sessions", "40",
                          "--concurrency", "10", "--json", str(out)],
                         capture_output=True, text=True, timeout=80)
    assert run.returncode == 0, run.stderr[-3000:]
    [row] = json.loads(out.read_text())["runs"]
    assert row["outcomes"] == {"joined": 40} and row["joined_per_s"] > 0, row
