"""The reconnecting client library against real nodes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gateway.cluster import Cluster
from node.backends.errors import Unavailable
from node.backoff import Backoff
from node.client import ChatClient, ClientClosed, SendFailed
from node.identity.jwt_tokens import mint
from node.runtime import NODE
from tests.chat_client import ChatClient as RawClient
from tests.conftest import unlimited_flags

TOKEN = "s3cret"
JWT_SECRET = "client-test-secret-of-32-bytes-or-more"


def _ws_url(node) -> str:
    return str(node.make_url("/ws"))


async def _until(client: ChatClient, kind: str) -> dict:
    while (event := await client.next_event())["type"] != kind:
        pass
    return event


async def test_send_returns_the_seq_and_the_message_arrives_once(node) -> None:
    async with ChatClient(_ws_url(node), "alice", "general") as alice:
        assert (await alice.next_event())["type"] == "room_joined"
        assert await alice.send("hello") == 1
        assert await alice.send("again") == 2
        texts = [(await _until(alice, "message"))["text"] for _ in range(2)]
        assert texts == ["hello", "again"]


async def test_a_refused_message_raises_and_a_final_close_stops_the_client(make_node) -> None:
    node = await make_node(rate=0.01, burst=3, flood_limit=1)
    async with ChatClient(_ws_url(node), "alice", "general") as alice:
        assert await alice.send("fits the burst") == 1
        with pytest.raises(SendFailed) as refused:
            await alice.send("over the rate")
        assert refused.value.code == "rate_limited"
        with pytest.raises((SendFailed, ClientClosed)):
            await alice.send("flooding")  # the second rejection closes with 1008
        assert (await _until(alice, "closed"))["reason"].endswith("1008")
        assert alice.connections == 1, "a policy close is not retried"


async def test_in_a_large_room_the_client_keeps_the_count_and_no_member_list(make_node
                                                                            ) -> None:
    node = await make_node(presence_limit=2, presence_interval=0.1)
    async with ChatClient(_ws_url(node), "alice", "general") as alice:
        assert (await alice.next_event())["type"] == "room_joined"
        async with ChatClient(_ws_url(node), "bob", "general") as bob:
            assert (await _until(alice, "user_joined"))["user"] == "bob"
            assert set(alice.members.values()) == {"alice", "bob"} and not alice.large
            async with ChatClient(_ws_url(node), "carol", "general") as carol:
                joined = await carol.next_event()
                assert (joined["large"], carol.members, carol.user_count) == (True, {}, 3)
                count = await _until(alice, "user_count")
                assert (alice.large, alice.members, alice.user_count) == (True, {}, 3)
                assert alice.presence == count["presence"]
                await _until(bob, "user_count")
                assert bob.large and bob.members == {}


@pytest.mark.parametrize("identity", ["anonymous", "jwt"])
async def test_a_drained_node_costs_the_client_nothing(make_cluster, identity: str) -> None:
    """Resumed on another node with nothing lost, and the room never sees it leave."""
    env = {"CHAT_JWT_SECRET": JWT_SECRET} if identity == "jwt" else {}
    cluster: Cluster = make_cluster(nodes=2, admin_token=TOKEN, node_env=env, node_args=[
        "--drain-window", "0.5", *unlimited_flags()])

    def token(user: str) -> str | None:
        return mint(JWT_SECRET, "HS256", user) if env else None

    async with ChatClient(cluster.ws_url, "reader", "general", jwt=token("reader")) as reader:
        home = int(reader.node.removeprefix("node"))  # type: ignore[union-attr]
        other = 3 - home
        async with ChatClient(cluster.node_ws_url(other), "writer", "general",
                              jwt=token("writer")) as writer:
            for n in range(1, 11):
                await writer.send(f"before {n}")
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{cluster.node_url(home)}/admin/drain",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as reply:
                    assert reply.status == 202
            for n in range(1, 31):
                await writer.send(f"during {n}")
            rejoined = None
            messages = []
            while len(messages) < 40:
                event = await reader.next_event()
                if event["type"] == "message":
                    messages.append(event)
                elif event["type"] == "room_joined":
                    rejoined = event
            assert [m["seq"] for m in messages] == list(range(1, 41))
            assert rejoined is not None and rejoined["recovered"] is True
            assert reader.node != f"node{home}" and reader.connections == 2
            await writer.send("the end")
            seen = []
            while (event := await writer.next_event()).get("text") != "the end":
                seen.append(event["type"])
            assert "user_left" not in seen and "user_joined" not in seen, seen


async def test_a_redis_restart_that_loses_history_is_reported_not_hidden(make_cluster) -> None:
    """Live members miss nothing (the next message is numbered on from what the nodes saw, or
    the room restarts and they are told); a resume from before the restart is told that the
    history it would continue may hold messages that no longer exist anywhere: it is told
    of the fork and goes on from what the nodes saw, or told it was not recovered."""
    cluster: Cluster = make_cluster(nodes=2)
    async with ChatClient(cluster.node_ws_url(1), "reader", "general") as reader, \
            ChatClient(cluster.node_ws_url(2), "writer", "general") as writer:
        for n in range(3):
            await writer.send(f"before {n}")
        old_epoch = reader.epoch
        assert cluster.redis is not None
        cluster.restart_redis()
        for _ in range(100):  # until the nodes are back on the new Redis
            try:
                await writer.send("after")
                break
            except SendFailed:
                await asyncio.sleep(0.1)
        events = []
        while not any(e.get("text") == "after" for e in events):
            events.append(await reader.next_event())
        assert [e["text"] for e in events if e["type"] == "message"] == [
            "before 0", "before 1", "before 2", "after"]
        async with aiohttp.ClientSession() as http:
            late = RawClient(await http.ws_connect(cluster.node_ws_url(1)))
            await late.auth("late")
            await late.send(type="join", room="general", since=3, epoch=old_epoch)
            resumed = await late.recv()
            if resumed["type"] == "history_reset":  # a publish forked it after seq 3
                assert resumed["seq"] == 3, resumed
                resumed = await late.recv()
                assert resumed["recovered"] is True
                assert [m["text"] for m in resumed["history"]] == ["after"]
            else:  # a node read the history first: it restarted whole, from seq 1
                assert resumed["recovered"] is False
                assert [m["text"] for m in resumed["history"]][-1] == "after"
            assert resumed["epoch"] != old_epoch
            await late.close()


async def test_a_join_refused_as_unavailable_is_retried_on_a_new_connection(node,
                                                                           monkeypatch) -> None:
    presence = node.server.app[NODE].presence
    real = presence.join
    refusals = 0

    async def unavailable_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal refusals
        if refusals == 0:
            refusals += 1
            raise Unavailable("injected")
        return await real(*args, **kwargs)

    monkeypatch.setattr(presence, "join", unavailable_once)
    async with ChatClient(_ws_url(node), "alice", "general") as alice:
        assert refusals == 1 and alice.connections == 2
        assert await alice.send("joined after all") == 1


async def test_a_name_taken_while_away_is_replaced_and_the_session_goes_on(node,
                                                                           monkeypatch) -> None:
    """The server refuses the resumed user's name (someone took it after the grace): the
    client picks the next name and resumes as the same user, where it was."""
    presence = node.server.app[NODE].presence
    real = presence.claim_name
    refused: list[tuple[str, ...]] = []

    async def taken_once(forms, user_id):  # type: ignore[no-untyped-def]
        if len(refused) == 1 and not refused[0]:  # armed: the next claim finds a holder
            refused[0] = forms
            return "somebody-else"
        return await real(forms, user_id)

    monkeypatch.setattr(presence, "claim_name", taken_once)
    async with ChatClient(_ws_url(node), "alice", "general") as alice:
        assert await alice.send("before") == 1
        user_id = alice.user_id
        refused.append(())
        assert alice._ws is not None
        await alice._ws.close()  # the connection drops: the client resumes
        taken = await _next_of(alice, "error")
        assert taken["code"] == "name_taken" and alice.name == "alice2"
        assert await alice.send("after") == 2, "the session went on"
        assert alice.user_id == user_id and alice.connections == 3


async def _next_of(client: ChatClient, kind: str) -> dict:
    while (event := await client.next_event())["type"] != kind:
        pass
    return event


class _Pause(Backoff):
    """Reconnects after a fixed pause: long enough for the room to say a lot meanwhile."""

    def next_delay(self) -> float:
        return 3.0


async def test_a_resume_larger_than_a_reply_is_paged_and_delivered_whole_in_order(
        make_node) -> None:
    node = await make_node(history_reply_bytes=3000, max_text=2000)
    async with ChatClient(_ws_url(node), "reader", "general", backoff=_Pause()) as reader, \
            ChatClient(_ws_url(node), "writer", "general") as writer:
        assert await writer.send("first") == 1
        assert (await _next_of(reader, "message"))["seq"] == 1
        assert reader._ws is not None
        await reader._ws.close()  # the reader is away for 3 s
        texts = [f"{n} " + "w" * 1000 for n in range(10)]
        for text in texts:
            await writer.send(text)
        resumed = await _next_of(reader, "room_joined")
        assert resumed["recovered"] is True and resumed["more"] is True
        assert len(resumed["history"]) < 10, "the gap did not fit in one reply"
        got = [await _next_of(reader, "message") for _ in texts]
        assert [m["seq"] for m in got] == list(range(2, 12))
        assert [m["text"] for m in got] == texts
        assert await writer.send("after") == 12
        assert (await _next_of(reader, "message"))["seq"] == 12


@pytest.mark.timeout(120)
async def test_a_send_cut_off_by_its_nodes_death_is_sent_again_and_stored_once(
        make_cluster) -> None:
    """Issue 31: the node under a send is killed before the client hears back; the client
    resumes through the gateway on the other node and sends the message again with its
    clientId. Stored or not before the kill, it is stored and delivered once."""
    cluster: Cluster = make_cluster(nodes=2, node_args=[*unlimited_flags(),
                                                        "--presence-grace", "0"])
    sent: dict[str, int] = {}
    async with ChatClient(cluster.ws_url, "writer", "general") as writer:
        for n in range(4):
            home = int(writer.node.removeprefix("node"))  # type: ignore[union-attr]
            sending = asyncio.create_task(writer.send(f"m{n}", timeout=30))
            await asyncio.sleep(0)  # the frame is written; the node may or may not store it
            port = cluster.nodes[home - 1].port
            await asyncio.to_thread(cluster.nodes[home - 1].kill)
            sent[f"m{n}"] = await sending
            cluster.nodes[home - 1] = await asyncio.to_thread(cluster.start_node, home, port)
        assert writer.connections == 5
    async with ChatClient(cluster.ws_url, "reader", "general") as reader:
        joined = await _until(reader, "room_joined")
    stored = [(message["text"], message["seq"]) for message in joined["history"]]
    assert stored == sorted(sent.items(), key=lambda item: item[1]), "each once, as acknowledged"
