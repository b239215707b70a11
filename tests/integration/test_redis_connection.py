"""The lean Redis connections of the hot paths (node.backends.redis.connection), against a real
redis-server: replies in call order, errors as redis-py raises them, a silent or lost Redis
noticed, Pub/Sub pushes delivered."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

from gateway.processes import Children, Service, redis_url, start_redis
from gateway.redis_cluster import RedisCluster, start_redis_cluster
from node.backends.redis.connection import (
    PING_INTERVAL, PONG_TIMEOUT, Endpoint, NotSent, PipelinedConnection, PushConnection,
)
from node.backends.redis.script_pipeline import ScriptPipeline
from node.backends.redis.support import connect
from tests.conftest import REDIS_PASSWORD
from tests.reply_losing_proxy import reply_losing_proxy


def _endpoint(url: str) -> Endpoint:
    return Endpoint.of(aioredis.BlockingConnectionPool.from_url(url, socket_connect_timeout=2))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Service]:
    """A redis-server of this test's own, to stop and kill."""
    service = start_redis(tmp_path, password=REDIS_PASSWORD)
    yield service
    service.process.send_signal(signal.SIGCONT)
    service.stop()


@pytest.fixture
async def connection(redis_url: str) -> AsyncIterator[PipelinedConnection]:
    connection = PipelinedConnection(_endpoint(redis_url), timeout=5.0)
    yield connection
    await connection.close()


async def test_calls_made_together_are_answered_in_order(connection: PipelinedConnection,
                                                        redis_prefix: str) -> None:
    key = f"{redis_prefix}:n"
    replies = await asyncio.gather(*(connection.call("INCR", key) for _ in range(50)))
    assert replies == list(range(1, 51))


async def test_an_error_reply_fails_only_its_own_call(connection: PipelinedConnection,
                                                     redis_prefix: str) -> None:
    key = f"{redis_prefix}:k"
    results = await asyncio.gather(connection.call("SET", key, "v"),
                                   connection.call("EVALSHA", "0" * 40, 0),
                                   connection.call("INCR", key),
                                   connection.call("GET", key), return_exceptions=True)
    assert results[0] == b"OK" and results[3] == b"v"
    assert isinstance(results[1], NoScriptError), "as redis-py would raise it"
    assert isinstance(results[2], ResponseError)


async def test_a_wrong_password_fails_the_calls_with_a_connection_error(
        redis_server: Service) -> None:
    connection = PipelinedConnection(_endpoint(redis_url(redis_server.port, "wrong")), 5.0)
    try:
        with pytest.raises(ConnectionError, match="refused"):
            await connection.call("PING")
    finally:
        await connection.close()


async def test_a_redis_that_stops_answering_fails_the_calls_in_flight(
        own_redis: Service) -> None:
    connection = PipelinedConnection(_endpoint(redis_url(own_redis.port, REDIS_PASSWORD)),
                                     timeout=0.5)
    try:
        assert await connection.call("PING") == b"PONG"
        own_redis.process.send_signal(signal.SIGSTOP)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(connection.call("PING"), 5)
        own_redis.process.send_signal(signal.SIGCONT)
        assert await connection.call("PING") == b"PONG", "a fresh connection"
    finally:
        await connection.close()


async def test_a_stall_is_told_once_per_silent_spell(own_redis: Service) -> None:
    """A Redis that keeps calls waiting for STALL_AFTER is reported to the owner (who may
    look for a failover) once, while the calls keep waiting for their answers."""
    stalls: asyncio.Queue[None] = asyncio.Queue()
    connection = PipelinedConnection(_endpoint(redis_url(own_redis.port, REDIS_PASSWORD)),
                                     5.0, on_stall=lambda: stalls.put_nowait(None))
    try:
        assert await connection.call("PING") == b"PONG"
        assert not connection.stalled
        for _spell in range(2):
            own_redis.process.send_signal(signal.SIGSTOP)
            waiting = connection.call("PING")
            await asyncio.wait_for(stalls.get(), 5)
            assert connection.stalled
            own_redis.process.send_signal(signal.SIGCONT)
            assert await waiting == b"PONG", "a stall is not a failure"
            assert not connection.stalled
        assert stalls.empty(), "once per silent spell"
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
        await connection.close()


async def test_a_restarted_redis_is_reached_on_a_fresh_connection(tmp_path: Path) -> None:
    service = start_redis(tmp_path, password=REDIS_PASSWORD)
    connection = PipelinedConnection(_endpoint(redis_url(service.port, REDIS_PASSWORD)), 5.0)
    try:
        assert await connection.call("PING") == b"PONG"
        service.kill()
        with pytest.raises(ConnectionError):
            await connection.call("PING")
        service = start_redis(tmp_path, port=service.port, password=REDIS_PASSWORD)
        assert await connection.call("PING") == b"PONG"
    finally:
        await connection.close()
        service.stop()


async def test_the_prologue_runs_on_every_connection_before_the_calls(
        own_redis: Service) -> None:
    admin = aioredis.from_url(redis_url(own_redis.port, REDIS_PASSWORD))
    script = "return 7"
    sha = await admin.script_load(script)
    await admin.script_flush()
    connection = PipelinedConnection(_endpoint(redis_url(own_redis.port, REDIS_PASSWORD)), 5.0,
                                     prologue=(("SCRIPT", "LOAD", script),))
    try:
        assert await connection.call("EVALSHA", sha, 0) == 7
    finally:
        await connection.close()
        await admin.aclose()


async def test_pushes_arrive_in_order_after_the_subscribe_confirmation(
        redis_url: str, redis_prefix: str) -> None:
    pushes: list[list[Any]] = []
    subscribed, arrived = asyncio.Event(), asyncio.Event()

    def on_push(push: list[Any]) -> None:
        pushes.append(push)
        subscribed.set()
        if len(pushes) == 4:
            arrived.set()

    channel = f"{redis_prefix}:c".encode()
    subscriber = await PushConnection.open(_endpoint(redis_url), on_push)
    publisher = aioredis.from_url(redis_url)
    try:
        subscriber.send(b"SUBSCRIBE", channel)
        async with asyncio.timeout(5):
            await subscribed.wait()
            for n in range(3):
                await publisher.publish(channel, b"m%d" % n)
            await arrived.wait()
        assert pushes == [[b"subscribe", channel, 1], [b"message", channel, b"m0"],
                          [b"message", channel, b"m1"], [b"message", channel, b"m2"]]
    finally:
        subscriber.close()
        await publisher.aclose()


async def test_a_push_connection_reports_its_loss(own_redis: Service) -> None:
    connection = await PushConnection.open(
        _endpoint(redis_url(own_redis.port, REDIS_PASSWORD)), lambda push: None)
    own_redis.kill()
    async with asyncio.timeout(5):
        await connection.lost


async def test_a_push_connection_drops_a_redis_that_stopped_answering(own_redis: Service) -> None:
    connection = await PushConnection.open(
        _endpoint(redis_url(own_redis.port, REDIS_PASSWORD)), lambda push: None)
    own_redis.process.send_signal(signal.SIGSTOP)  # no FIN, no RST: only silence
    async with asyncio.timeout(PING_INTERVAL + PONG_TIMEOUT + 3):
        await connection.watch()
    assert connection.lost.done()


async def test_a_call_that_never_left_fails_as_not_sent(unused_tcp_port: int) -> None:
    connection = PipelinedConnection(_endpoint(f"redis://127.0.0.1:{unused_tcp_port}"), 5.0)
    try:
        with pytest.raises(NotSent):
            await connection.call("PING")
    finally:
        await connection.close()


@pytest.mark.parametrize("repeatable,runs", [(True, 2), (False, 1)])
async def test_a_call_sent_and_unanswered_runs_again_only_if_repeatable(
        tmp_path: Path, repeatable: bool, runs: int, redis_prefix: str) -> None:
    """A Redis without a password and a pipeline without a prologue, so that the call is
    the first thing the proxy passes on."""
    bare = start_redis(tmp_path)
    admin = aioredis.from_url(redis_url(bare.port, None))
    script = admin.register_script("return redis.call('INCR', KEYS[1])")
    async with reply_losing_proxy(bare.port) as port:
        pipeline = ScriptPipeline(aioredis.from_url(f"redis://127.0.0.1:{port}"), [])
        try:
            await admin.script_load(script.script)
            with pytest.raises(ConnectionError) as lost:
                await pipeline.run(script, [f"{redis_prefix}:runs"], [], repeatable=repeatable)
            assert not isinstance(lost.value, NotSent)
            assert int(await admin.get(f"{redis_prefix}:runs")) == runs
        finally:
            await pipeline.close()
            await admin.aclose()
            bare.stop()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_shard_primary_that_stopped_answering_is_left_for_its_promoted_replica(
        tmp_path: Path) -> None:
    """A shard's primary goes silent (stopped: a partition looks the same) and its replica is
    promoted; the call in flight there ends once the pipeline, looking at the slot map while
    the call waits, sees the primary replaced (not after the whole answer timeout), and the
    next call reaches the new primary instead of waiting out another timeout on a fresh
    connection to the old one (a resume after `unknown_outcome` did)."""
    children = Children()
    cluster = start_redis_cluster(tmp_path, 3, REDIS_PASSWORD, children)
    client = connect(cluster.seed_url, cluster=True)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    pipeline = ScriptPipeline(client, [script])
    key, slot = "r:{x}:n", key_slot(b"x")
    try:
        assert await pipeline.run(script, [key], [], repeatable=False) == 1
        primary = cluster.owner(slot)
        replica = cluster.replica_of(primary)
        primary.signal(signal.SIGSTOP)
        others = [node for node in cluster.nodes if node is not primary]
        while any(_promoted(cluster, slot, node) is not replica for node in others):
            await asyncio.sleep(0.1)  # every node the slot map may be read from knows
        with pytest.raises(ConnectionError, match="failed over"):  # not a TimeoutError
            await pipeline.run(script, [key], [], repeatable=False)  # to the old primary
        # answered by the new primary (1 when the first INCR had not reached it yet)
        assert await pipeline.run(script, [key], [], repeatable=False) in (1, 2)
    finally:
        await pipeline.close()
        await client.aclose()
        for service in children.stop():
            service.signal(signal.SIGCONT)
            service.stop()


def _promoted(cluster: RedisCluster, slot: int, asking: Service) -> Service | None:
    with contextlib.suppress(LookupError):
        return cluster.owner(slot, [asking])
    return None
