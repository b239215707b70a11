"""The capacity planner: demand arithmetic, the binding resource, the report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadtest.capacity import (
    Demand, Model, check, fit, load, parse_rooms, plan, report, subscribed_nodes,
)

MODEL = Model(per_gateway_write=5e-6, per_publish=50e-6, redis_per_publish=20e-6,
              redis_nodes=2, nginx_per_write=4e-6, kib_per_connection=16.0,
              node_base_kib=50 * 1024)


def demand(users: int = 50000, rooms: str = "20", per_minute: float = 2.0) -> Demand:
    return Demand(users, parse_rooms(rooms), per_minute, headroom=0.3, node_memory_mib=1024,
                  max_connections=10000)


def test_rooms_of_twenty_and_two_messages_a_minute() -> None:
    d = demand()
    assert d.publishes == pytest.approx(50000 * 2 / 60)
    assert d.deliveries == pytest.approx(50000 * 2 / 60 * 20)


def test_a_room_mix_weights_sizes_by_their_share_of_users() -> None:
    assert parse_rooms("20:3,200:1") == {20: 0.75, 200: 0.25}
    assert demand(rooms="20:3,200:1").room_size == pytest.approx(0.75 * 20 + 0.25 * 200)


def test_a_room_spans_at_most_its_size_in_nodes() -> None:
    assert subscribed_nodes(1, {20: 1.0}) == pytest.approx(1)
    assert subscribed_nodes(100, {2: 1.0}) < 2
    assert subscribed_nodes(4, {20: 1.0}) == pytest.approx(4 * (1 - 0.75 ** 20))


def test_the_connection_limit_binds_when_users_barely_talk() -> None:
    result = plan(MODEL, demand(users=100000, per_minute=0.01))
    assert result["binding"] == "connections"
    assert result["nodes"] == 15  # 100,000 / (0.7 * 10,000) = 14.3
    assert result["nodes_n_plus_1"] == 16


def test_cpu_binds_when_users_talk_a_lot() -> None:
    result = plan(MODEL, demand(users=20000, per_minute=60))
    publishes, deliveries = 20000, 20000 * 20
    expected = (5e-6 * deliveries + 50e-6 * publishes) / 0.7
    assert result["binding"] == "CPU"
    assert result["needs"]["CPU"] == pytest.approx(expected)
    assert result["node_cpu"] <= 0.7


def test_idle_connections_cost_cpu_when_an_idle_run_measured_it() -> None:
    pinged = Model(**{**MODEL.__dict__, "per_connection": 1e-6})  # 1 µs/s each
    quiet, busy = plan(MODEL, demand(users=20000, per_minute=60)), plan(pinged, demand(
        users=20000, per_minute=60))
    assert busy["needs"]["CPU"] - quiet["needs"]["CPU"] == pytest.approx(
        1e-6 * 20000 / 0.7)
    assert busy["node_cpu"] - quiet["node_cpu"] == pytest.approx(1e-6 * 20000 / busy["nodes"])


def test_room_joins_cost_node_and_redis_cpu_at_their_measured_rates() -> None:
    joining = Model(**{**MODEL.__dict__, "per_join": 400e-6, "redis_per_join": 300e-6})
    still = demand(users=20000, per_minute=60)
    moving = Demand(**{**still.__dict__, "joins_per_minute": 3.0})  # 1,000 joins/s
    before, after = plan(joining, still), plan(joining, moving)
    assert after["needs"]["CPU"] - before["needs"]["CPU"] == pytest.approx(0.4 / 0.7)
    assert after["redis_cores"] - before["redis_cores"] == pytest.approx(0.3)


def test_redis_runs_out_when_one_instance_cannot_carry_the_publishes() -> None:
    assert plan(MODEL, demand(users=50000))["redis_fits"]
    assert not plan(MODEL, demand(users=2000000, per_minute=10))["redis_fits"]


def test_redis_cluster_shards_carry_what_one_redis_cannot() -> None:
    busy = demand(users=100000, per_minute=10)
    one = plan(MODEL, busy)
    assert not one["redis_fits"] and one["redis_cores"] > 1.4
    assert one["redis_shards"] == math.ceil(one["redis_cores"] / 0.7)
    assert one["shard_cores"] == pytest.approx(one["redis_cores"] / one["redis_shards"])
    assert one["shard_cores"] <= 0.7 and one["replica_cores"] is None, "not measured"
    sharded = Model(**{**MODEL.__dict__, "shard_per_publish": 30e-6,
                       "replica_per_publish": 10e-6})
    measured = plan(sharded, busy)
    assert measured["redis_shards"] == math.ceil(1.5 * one["redis_cores"] / 0.7), \
        "a shard's own measured cost, not the single Redis's"
    assert measured["replica_cores"] == pytest.approx(measured["shard_cores"] / 3)


def test_a_lost_nodes_users_resume_on_the_others_at_their_admission_rate() -> None:
    assert plan(MODEL, demand())["storm_seconds"] is None, "no admission run: not planned"
    admitting = Model(**{**MODEL.__dict__, "sessions_per_s": 500.0})
    result = plan(admitting, demand(users=100000, per_minute=0.01))  # 15 nodes, by connections
    assert result["storm_seconds"] == pytest.approx(100000 / 15 / (14 * 500))
    assert result["cold_start_seconds"] == pytest.approx(100000 / (15 * 500))


def test_the_report_is_written_from_measured_results(tmp_path: Path) -> None:
    results = sorted((Path(__file__).parents[2] / "docs" / "results").glob("*.json"))
    kinds = {json.loads(p.read_text())["benchmark"] for p in results}
    assert {"fanout", "idle"} <= kinds
    path = report(load(results), demand(), tmp_path)
    text = path.read_text()
    assert "## Plan" in text and "runs out first" in text
    assert "users resume on the other" in text, "docs/results holds an admission run"
    model = fit(load(results))
    assert model.per_join > 0 and model.redis_per_join > 0, "docs/results holds a --churn run"
    assert model.per_connection > 0, "and idle runs that measured CPU"
    for name in ("node_cpu.png", "latency.png", "memory.png", "redis.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in text


def test_room_shape_runs_keep_their_shape_and_the_report_checks_the_model_on_each(
        tmp_path: Path) -> None:
    results = Path(__file__).parents[2] / "docs" / "results"
    runs = load([results / "fanout-shapes.json"]).fanout
    assert {(r["args"]["members"], r["args"]["rooms"]) for r in runs} >= {(2, 2000), (10000, 1)}
    text = report(load(sorted(results.glob("*.json"))), demand(), tmp_path).read_text()
    shapes = text.split("## Room shapes")[1].split("##")[0]
    assert "| 2 × 2000 |" in shapes and "| 10000 × 1 |" in shapes


def test_redis_memory_counts_rooms_members_and_histories_within_their_byte_cap() -> None:
    assert plan(MODEL, demand(40_000, "20", 1.0))["redis_memory_bytes"] is None  # unmeasured
    measured = Model(**{**MODEL.__dict__, "redis_memory": (5000.0, 500.0, 300.0)})
    wanted = demand(40_000, "20", 1.0)  # 2,000 rooms of 20; 100-byte texts, 100 kept
    expected = 2000 * (5000 + 100 * 400) + 38_000 * 500
    assert plan(measured, wanted)["redis_memory_bytes"] == expected
    long_texts = Demand(**{**wanted.__dict__, "text_bytes": 9700.0})  # 10,000 bytes stored
    capped = 2000 * (5000 + 26 * 10_000) + 38_000 * 500  # 26 fit in 262,144 bytes
    assert plan(measured, long_texts)["redis_memory_bytes"] == capped


def test_a_run_the_model_was_not_fitted_on_is_predicted_and_its_error_reported() -> None:
    run = {"args": {"rooms": 100, "members": 20, "nodes": 2, "gateway": True, "senders": 1,
                    "step_seconds": 10}, "spread": True, "system": "chat",
           "steps": [{"passed": True, "achieved_per_s": 20000, "published_per_s": 1000,
                      "cpu_s": {"node1": 1.0, "node2": 1.0, "redis": 0.5, "nginx": 0.8}},
                     {"passed": False, "achieved_per_s": 40000, "published_per_s": 2000,
                      "cpu_s": {"node1": 9.0, "node2": 9.0, "redis": 9.0, "nginx": 9.0}}]}
    rows = {row["part"]: row for row in check(MODEL, [run])}
    # nodes: 5 µs x 20,000 writes (one frame each) + 50 µs x 1,000 = 0.15 cores of 0.2
    assert rows["nodes"]["predicted"] == pytest.approx(0.15)
    assert rows["nodes"]["error"] == pytest.approx(0.15 / 0.2 - 1)
    # Redis: 20 µs a publish at 2 subscribed nodes (linear); rooms of 20 span ~2 of 2 nodes
    assert rows["redis"]["predicted"] == pytest.approx(0.02 * subscribed_nodes(2, {20: 1}) / 2)
    assert rows["nginx"]["predicted"] == pytest.approx(0.08)  # 4 µs a write relayed
    assert rows["nginx"]["measured"] == pytest.approx(0.08) and rows["nginx"]["error"] == 0
    assert {row["per_s"] for row in check(MODEL, [run])} == {20000}, "failed steps not checked"


def test_busy_members_share_writes_and_the_others_do_not() -> None:
    quiet = demand(users=20000, rooms="20", per_minute=2)  # a member receives 0.67 a second
    assert quiet.writes == pytest.approx(quiet.deliveries)
    busy = demand(users=20000, rooms="2000", per_minute=6)  # 200 a second: 10 a write
    assert busy.writes == pytest.approx(busy.deliveries / (200 * busy.write_delay))
    writing = Model(**{**MODEL.__dict__, "per_gateway_write": 8e-6})  # 3 µs more a write
    assert plan(writing, busy)["needs"]["CPU"] - plan(MODEL, busy)["needs"]["CPU"] == (
        pytest.approx(3e-6 * busy.writes / 0.7))


def test_envelopes_grow_with_the_nodes_a_room_spans() -> None:
    enveloping = Model(**{**MODEL.__dict__, "per_envelope": 20e-6})
    small, large = demand(users=20000, rooms="2", per_minute=60), demand(
        users=20000, rooms="5000", per_minute=0.1)
    for d in (small, large):
        result = plan(enveloping, d)
        spread = subscribed_nodes(result["needs"]["CPU"], d.rooms)  # the fixed point
        assert result["needs"]["CPU"] * 0.7 == pytest.approx(
            5e-6 * d.writes + 50e-6 * d.publishes + 20e-6 * d.publishes * spread, rel=1e-4)
    assert subscribed_nodes(2.5, small.rooms) < 2  # a room of 2 spans 2 nodes at most
