"""Prometheus metrics at /metrics: what a node did and what it holds, by a real scrape."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).parents[2]


async def _scrape(node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    response = await node.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(await response.text())
            for sample in family.samples}


async def test_metrics_count_messages_deliveries_errors_and_read_live_state(node, member
                                                                           ) -> None:
    alice = await member("alice")
    bob = await member("bob")
    await alice.expect("user_joined")
    for text in ("one", "two"):
        await alice.say(text)
        for client in (alice, bob):
            assert (await client.expect("message"))["text"] == text
    await alice.say("   ")
    await alice.expect_error("text_required")
    metrics = await _scrape(node)
    assert metrics["chat_messages_received_total", ()] == 2  # the blank one is an error
    assert metrics["chat_messages_published_total", ()] == 2
    assert metrics["chat_publish_seconds_count", ()] == 2
    # 2 messages to 2 members, and bob's user_joined to alice only (not to bob himself)
    assert metrics["chat_frames_delivered_total", ()] == 5
    assert metrics["chat_fanout_seconds_count", ()] == 4  # 2 user_joined, 2 messages
    assert metrics["chat_errors_total", (("code", "text_required"),)] == 1
    assert metrics["chat_sessions", ()] == 2
    assert metrics["chat_sockets", (("kind", "chat"),)] == 2
    assert metrics["chat_rooms_local", ()] == 1
    assert metrics["chat_room_joins_total", ()] == 2  # alice's and bob's
    assert metrics["chat_broker_ready", ()] == 1
    assert (metrics["chat_draining", ()], metrics["chat_ready", ()]) == (0, 1)


async def test_server_closes_are_counted_by_code(node, connect) -> None:
    client = await connect()
    await client.ws.send_bytes(b"\x00")
    assert (await client.expect_close())[0] == 1003
    metrics = await _scrape(node)
    assert metrics["chat_closes_total", (("code", "1003"),)] == 1


async def test_the_compose_dashboard_queries_only_metrics_a_node_serves(node) -> None:
    dashboard = json.loads((ROOT / "compose" / "grafana" / "dashboards" / "chat.json").read_text())
    queried = {re.sub(r"_(total|bucket|count|sum)$", "", name)
               for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bchat_[a-z_]+", target["expr"])}
    response = await node.get("/metrics")
    served = {family.name for family in text_string_to_metric_families(await response.text())}
    assert len(queried) >= 12 and queried <= served, queried - served
