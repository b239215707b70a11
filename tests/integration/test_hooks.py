"""The publish and connect hooks (issue 32) against real nodes and a real HTTP receiver on
loopback that verifies every call's signature with the `standardwebhooks` library: accept,
reject and replace as other nodes' members see them, a slow and a down hook under each
policy with the node's loop unaffected, and every bound at its edge."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.processes import LOOPBACK, free_port
from tests.chat_client import ChatClient
from gateway.tokens import new_hook_secret
from tests.hook_receiver import Receiver, started

TIMEOUT = 0.3  # seconds a hook call may take in these tests
# The hook is the node's HTTP client's business, whatever the backend: the tests below that
# are not about other nodes run on the memory backend alone (suite time).
NODE_ALONE = pytest.mark.parametrize("backend", ["memory"], indirect=True)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await started(new_hook_secret())
    yield receiver
    await receiver.stop()


async def _member(node: Any, name: str, room: str = "general") -> ChatClient:
    client = ChatClient(await node.ws_connect("/ws"))
    await client.auth(name)
    await client.join(room)
    return client


def _filter(body: dict[str, Any]) -> dict[str, Any]:
    if "spam" in body["text"]:
        return {"result": "reject", "code": "spam_blocked", "reason": "No spam here"}
    if "darn" in body["text"]:
        return {"result": "replace", "text": body["text"].replace("darn", "d**n")}
    return {"result": "accept"}


def _hooked(receiver: Receiver, **more: Any) -> dict[str, Any]:
    return {"publish_hook": receiver.url("publish"), "hook_secret": receiver.secret,
            "publish_hook_timeout": TIMEOUT, **more}


async def test_the_publish_hook_accepts_rejects_and_replaces_for_every_node(
        make_node, backend, receiver) -> None:
    receiver.answer = _filter
    first = await make_node(**_hooked(receiver), node_id="hooks-1")
    second = await make_node(**_hooked(receiver), node_id="hooks-2") \
        if backend == "redis" else first
    alice, bob = await _member(first, "alice"), await _member(second, "bob")
    await alice.send(type="message", text="hello", clientId="c-1")
    assert (await bob.skip_to("message"))["text"] == "hello"
    await alice.say("buy spam now")
    refused = await alice.skip_to("error")
    assert (refused["code"], refused["message"]) == ("spam_blocked", "No spam here")
    await alice.say("darn it")
    replaced = await bob.skip_to("message")  # the rejected one never came
    assert (replaced["text"], replaced["seq"]) == ("d**n it", 2)
    assert (await alice.skip_to("message"))["text"] == "d**n it"
    assert receiver.calls[0] == ("publish", {"room": "general", "userId": alice.user_id,
                                             "name": "alice", "text": "hello",
                                             "clientId": "c-1"})
    assert [body["text"] for _, body in receiver.calls] == ["hello", "buy spam now", "darn it"]
    assert receiver.forged == 0


@NODE_ALONE
@pytest.mark.parametrize("failure", ["reject", "accept"])
@pytest.mark.parametrize("fault", ["slow", "down"])
async def test_a_failing_publish_hook_decides_by_the_policy_and_the_loop_stays_free(
        make_node, receiver, failure: str, fault: str) -> None:
    """20 senders wait on a hook that answers late (past the timeout) or refuses
    connections; a canary's pings meanwhile come back as fast as ever."""
    if fault == "slow":
        receiver.delay = 5.0
    url = receiver.url("publish") if fault == "slow" else f"http://{LOOPBACK}:{free_port()}/"
    node = await make_node(**_hooked(receiver, publish_hook=url, publish_hook_failure=failure))
    senders = [await _member(node, f"sender{i}") for i in range(20)]
    canary = await _member(node, "canary", room="random")
    started_at = time.monotonic()
    for sender in senders:
        await sender.say("hello")
    rtts = []
    gc.collect()
    gc.disable()  # the suite's process is large: a full collection would pause the canary
    try:
        for _ in range(100):
            sent = time.monotonic()
            await canary.send(type="ping")
            await canary.skip_to("pong")
            rtts.append(time.monotonic() - sent)
    finally:
        gc.enable()
    outcomes = [await s.skip_to_any("error", "message", timeout=TIMEOUT + 5) for s in senders]
    if failure == "reject":
        assert {o["type"] for o in outcomes} == {"error"}
        assert {o["code"] for o in outcomes} == {"unavailable"}
    else:
        assert {o["type"] for o in outcomes} == {"message"}
    assert time.monotonic() - started_at < TIMEOUT + 3  # bounded by the timeout, not the hook
    assert sorted(rtts)[98] < 0.1, sorted(rtts)[-5:]  # p99 of 100


@NODE_ALONE
async def test_calls_past_the_concurrency_wait_within_the_timeout(make_node, receiver) -> None:
    receiver.delay = 5.0
    node = await make_node(**_hooked(receiver, publish_hook_concurrency=2))
    senders = [await _member(node, f"s{i}") for i in range(4)]
    for sender in senders:
        await sender.say("hi")
    for sender in senders:
        assert (await sender.skip_to("error", timeout=TIMEOUT + 3))["code"] == "unavailable"
    assert len(receiver.calls) <= 2  # two in flight; the others timed out waiting for a slot


@NODE_ALONE
@pytest.mark.parametrize("answer", [
    {"result": "maybe"},
    {"result": "replace"},
    {"result": "replace", "text": ""},
    {"result": "replace", "text": "x" * 101},  # past --max-text
    {"result": "replace", "text": "bell\x07"},
    {"result": "reject", "code": "Not A Code"},
    {"result": "reject", "reason": "r" * 201},
    "not an object",
])
async def test_a_bad_answer_is_a_failed_hook(make_node, receiver, answer: Any) -> None:
    receiver.answer = lambda body: answer
    node = await make_node(**_hooked(receiver, max_text=100))
    alice = await _member(node, "alice")
    await alice.say("hello")
    assert (await alice.skip_to("error"))["code"] == "unavailable"


@NODE_ALONE
async def test_an_answer_over_the_bound_is_a_failed_hook(make_node, receiver) -> None:
    receiver.answer = lambda body: {"result": "accept", "pad": "x" * 70000}
    node = await make_node(**_hooked(receiver))
    alice = await _member(node, "alice")
    await alice.say("hello")
    assert (await alice.skip_to("error"))["code"] == "unavailable"
    metrics = await (await node.get("/metrics")).text()
    assert 'chat_hook_failures_total{hook="publish",why="too_large"} 1.0' in metrics
    assert 'chat_hook_seconds_count{hook="publish"}' not in metrics


@NODE_ALONE
async def test_the_hooks_calls_show_in_the_metrics(make_node, receiver) -> None:
    node = await make_node(**_hooked(receiver))
    alice = await _member(node, "alice")
    await alice.say("hello")
    await alice.skip_to("message")
    metrics = await (await node.get("/metrics")).text()
    assert 'chat_hook_seconds_count{hook="publish"} 1.0' in metrics


async def test_the_connect_hook_names_limits_and_refuses(make_node, receiver) -> None:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("name") == "mallory":
            return {"result": "reject", "code": "suspended", "reason": "Account suspended"}
        if body.get("token") == "app-session-1":
            return {"result": "accept", "userId": "user-1", "name": "Alice Liddell",
                    "rooms": ["random"]}
        return {"result": "accept"}

    receiver.answer = answer
    node = await make_node(connect_hook=receiver.url("connect"), hook_secret=receiver.secret,
                           publish_hook_timeout=TIMEOUT)
    alice = ChatClient(await node.ws_connect("/ws"))
    await alice.send(type="auth", name="alice", token="app-session-1")
    success = await alice.expect("auth_success")
    assert (success["userId"], success["name"]) == ("user-1", "Alice Liddell")
    await alice.send(type="join", room="general")
    assert (await alice.expect("error"))["code"] == "forbidden"
    assert (await alice.join("random"))["room"] == "random"
    assert receiver.calls[0][1]["token"] == "app-session-1"
    assert receiver.calls[0][1]["address"] == "127.0.0.1"
    mallory = ChatClient(await node.ws_connect("/ws"))
    await mallory.send(type="auth", name="mallory")
    refused = await mallory.expect("error")
    assert (refused["code"], refused["message"]) == ("suspended", "Account suspended")
    assert (await mallory.expect_close())[0] == 4001
    resumed = ChatClient(await node.ws_connect("/ws"))
    await resumed.send(type="auth", name="bob", userId="user-1", token=success["token"])
    await resumed.expect("auth_success")
    assert receiver.calls[-1][1] == {"address": "127.0.0.1", "userId": "user-1",
                                     "name": "bob"}  # a resume: its token is the node's


@NODE_ALONE
async def test_a_connect_hook_that_fails_lets_nobody_in(make_node, receiver) -> None:
    node = await make_node(connect_hook=f"http://{LOOPBACK}:{free_port()}/",
                           hook_secret=receiver.secret, publish_hook_timeout=TIMEOUT)
    client = ChatClient(await node.ws_connect("/ws"))
    await client.send(type="auth", name="alice")
    assert (await client.expect("error"))["code"] == "unavailable"
    await client.send(type="join", room="general")
    assert (await client.expect("error"))["code"] == "not_authenticated"
