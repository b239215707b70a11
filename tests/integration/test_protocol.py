"""The client protocol, message type by message type, against a real node."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import pytest

from tests.chat_client import settle_joins, send_concurrently
from tests.conftest import ClientFactory



# --- auth ------------------------------------------------------------------------------

async def test_auth_returns_user_id_name_and_node(connect: ClientFactory) -> None:
    client = await connect()
    event = await client.auth("alice")
    assert event["name"] == "alice"
    assert event["node"] == "test-node"
    uuid.UUID(event["userId"])


async def test_auth_trims_the_name_and_defaults_to_anonymous(connect: ClientFactory) -> None:
    trimmed, anonymous = await connect(), await connect()
    assert (await trimmed.auth("  bob  "))["name"] == "bob"
    await anonymous.send(type="auth")
    assert (await anonymous.expect("auth_success"))["name"] == "Anonymous"


@pytest.mark.parametrize("name", ["", "   ", "x" * 33, "tab\there", "bell\x07"])
async def test_auth_rejects_invalid_names(connect: ClientFactory, name: str) -> None:
    client = await connect()
    await client.send(type="auth", name=name)
    await client.expect_error("invalid_name")
    assert (await client.auth("fine"))["name"] == "fine"


async def test_auth_accepts_names_of_exactly_32_characters(connect: ClientFactory) -> None:
    client = await connect()
    assert (await client.auth("n" * 32))["name"] == "n" * 32


async def test_authenticating_twice_is_an_error(connect: ClientFactory) -> None:
    client = await connect()
    await client.auth("alice")
    await client.send(type="auth", name="mallory")
    await client.expect_error("already_authenticated")


@pytest.mark.parametrize("kind", ["join", "leave", "message"])
async def test_room_commands_need_auth(connect: ClientFactory, kind: str) -> None:
    client = await connect()
    await client.send(type=kind, room="general", text="hi")
    await client.expect_error("not_authenticated")


# --- join and leave --------------------------------------------------------------------

async def test_join_answers_room_joined_and_tells_the_others(member, connect) -> None:
    alice = await member("alice")
    bob = await connect()
    await bob.auth("bob")
    joined = await bob.join("general")
    assert joined["room"] == "general"
    assert joined["history"] == []
    assert sorted(joined["users"]) == ["alice", "bob"]
    assert joined["userCount"] == 2
    assert joined["seq"] == 0
    assert await alice.expect("user_joined") == {
        "type": "user_joined", "user": "bob", "userId": bob.user_id, "room": "general",
        "userCount": 2, "presence": joined["presence"],  # the change bob's snapshot holds
    }
    await bob.say("after join")
    assert (await bob.expect("message"))["text"] == "after join", "no user_joined for the joiner"


async def test_joining_another_room_leaves_the_current_one(member) -> None:
    alice = await member("alice", "general")
    bob = await member("bob", "general")
    joined = await alice.expect("user_joined")
    moved = await bob.join("random")
    assert moved["room"] == "random" and moved["users"] == ["bob"]
    left = await alice.expect("user_left")
    assert left == {"type": "user_left", "user": "bob", "userId": bob.user_id,
                    "room": "general", "userCount": 1, "presence": joined["presence"] + 1}


@pytest.mark.parametrize("room", ["", "has space", "slash/no", "é", "r" * 65])
async def test_join_rejects_invalid_room_names(member, connect, room: str) -> None:
    client = await connect()
    await client.auth()
    await client.send(type="join", room=room)
    await client.expect_error("invalid_room")


async def test_join_without_a_room_is_invalid_room(connect: ClientFactory) -> None:
    client = await connect()
    await client.auth()
    await client.send(type="join")
    await client.expect_error("invalid_room")


async def test_room_names_of_64_allowed_characters_create_a_room(connect: ClientFactory) -> None:
    client = await connect()
    await client.auth()
    name = "Az09._-" + "x" * 57
    assert (await client.join(name))["room"] == name
    await client.send(type="list_rooms")
    rooms = {r["name"]: r["userCount"] for r in (await client.expect("room_list"))["rooms"]}
    assert rooms == {"general": 0, "random": 0, name: 1}


async def test_leave_tells_the_leaver_and_the_others(member) -> None:
    alice = await member("alice")
    bob = await member("bob")
    await alice.expect("user_joined")
    await bob.send(type="leave")
    assert await bob.expect("room_left") == {"type": "room_left", "room": "general"}
    assert (await alice.expect("user_left"))["userCount"] == 1


async def test_leave_outside_a_room_is_not_in_room(connect: ClientFactory) -> None:
    client = await connect()
    await client.auth()
    await client.send(type="leave")
    await client.expect_error("not_in_room")


async def test_disconnect_leaves_the_room(member) -> None:
    alice = await member("alice")
    bob = await member("bob")
    await alice.expect("user_joined")
    await bob.close()
    assert (await alice.expect("user_left"))["user"] == "bob"


# --- messages --------------------------------------------------------------------------

async def test_message_reaches_every_member_sender_included(member) -> None:
    alice = await member("alice")
    bob = await member("bob")
    await alice.expect("user_joined")
    await alice.say("hello")
    seen = [await alice.expect("message"), await bob.expect("message")]
    assert seen[0] == seen[1]
    event = seen[0]
    assert event["room"] == "general" and event["user"] == "alice" and event["text"] == "hello"
    assert event["seq"] == 1 and event["id"]
    uuid.UUID(event["userId"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["timestamp"])
    datetime.fromisoformat(event["timestamp"])


async def test_messages_count_seq_up_by_one(member) -> None:
    alice = await member("alice")
    for n in range(1, 6):
        await alice.say(f"m{n}")
        assert (await alice.expect("message"))["seq"] == n


async def test_bursts_of_frames_are_handled_in_order_with_nothing_lost(member) -> None:
    """Each burst is more than a session reads ahead: it stops reading, then resumes."""
    alice = await member("alice")
    events = []
    for burst in range(3):
        for n in range(100 * burst + 1, 100 * burst + 101):
            await alice.say(f"m{n}")
        events += [await alice.expect("message", timeout=2.0) for _ in range(100)]
    assert [(e["seq"], e["text"]) for e in events] == [(n, f"m{n}") for n in range(1, 301)]


async def test_message_outside_a_room_is_not_in_room(connect: ClientFactory) -> None:
    client = await connect()
    await client.auth()
    await client.say("hello?")
    await client.expect_error("not_in_room")


@pytest.mark.parametrize("frame", [{"type": "message"}, {"type": "message", "text": ""},
                                   {"type": "message", "text": " \n\t "}])
async def test_empty_text_is_text_required(member, frame: dict[str, str]) -> None:
    alice = await member("alice")
    await alice.send(**frame)
    await alice.expect_error("text_required")


async def test_text_longer_than_max_text_is_rejected_at_the_edge(make_node, connect) -> None:
    node = await make_node(max_text=20)
    client = await connect(node)
    await client.auth()
    await client.join()
    await client.say("x" * 21)
    await client.expect_error("text_too_long")
    await client.say("y" * 20)
    assert (await client.expect("message"))["text"] == "y" * 20


@pytest.mark.parametrize("control", ["\x00", "\x01", "\r", "\x1b", "\x7f", "\x85", "\x9f"])
async def test_a_control_character_in_text_is_refused(member, control: str) -> None:
    """Escaped, each would be six bytes in every frame and in Redis."""
    alice = await member("alice")
    await alice.say(f"before{control}after")
    await alice.expect_error("invalid_text")
    await alice.say("tab\tand\nnewline stay, as do ünïcödé and emoji 🎉")
    assert (await alice.expect("message"))["text"].startswith("tab\tand\nnewline")


async def test_unicode_text_is_counted_in_characters(make_node, connect) -> None:
    node = await make_node(max_text=3)
    client = await connect(node)
    await client.auth()
    await client.join()
    await client.say("ééé")
    assert (await client.expect("message"))["text"] == "ééé"


# --- list_rooms, ping, pong ------------------------------------------------------------

async def test_list_rooms_works_before_auth_and_counts_users(member, connect) -> None:
    await member("alice", "lobby")
    client = await connect()
    await client.send(type="list_rooms")
    assert await client.expect("room_list") == {"type": "room_list", "rooms": [
        {"name": "general", "userCount": 0},
        {"name": "lobby", "userCount": 1},
        {"name": "random", "userCount": 0},
    ], "total": 3, "next": None}


async def test_client_ping_gets_pong_with_server_time(connect: ClientFactory) -> None:
    client = await connect()
    await client.send(type="ping")
    pong = await client.expect("pong")
    assert isinstance(pong["timestamp"], int) and pong["timestamp"] > 1_700_000_000_000


# --- malformed frames ------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"', "{}", '{"type": 7}',
                                 '{"type": null}', '{"type": "auth", "name": 5}',
                                 '{"type": "join", "room": ["general"]}',
                                 '{"type": "message", "text": {"a": 1}}'])
async def test_malformed_frames_are_invalid_format_and_the_connection_survives(
    connect: ClientFactory, raw: str
) -> None:
    client = await connect()
    await client.ws.send_str(raw)
    await client.expect_error("invalid_format")
    await client.auth()


async def test_unknown_type_names_the_type(connect: ClientFactory) -> None:
    client = await connect()
    await client.send(type="dance")
    error = await client.expect_error("unknown_type")
    assert error["message"] == "Unknown message type: 'dance'"


async def test_an_error_quotes_no_more_than_a_few_dozen_characters(
        connect: ClientFactory) -> None:
    client = await connect()
    await client.send(type="x" * 60_000)
    error = await client.expect_error("unknown_type")
    assert error["message"] == f"Unknown message type: {'x' * 32!r}..."


# --- ordering ----------------------------------------------------------------------------

async def test_concurrent_senders_share_one_gapless_sequence(member) -> None:
    senders = [await member(f"user{n}") for n in range(4)]
    await settle_joins(senders)
    per_sender = 25
    total = per_sender * len(senders)
    for events in await send_concurrently(senders, per_sender):
        assert [e["seq"] for e in events] == list(range(1, total + 1))
        for n in range(len(senders)):
            mine = [e["text"] for e in events if e["text"].startswith(f"{n}:")]
            assert mine == [f"{n}:{i}" for i in range(per_sender)]


async def test_a_client_id_is_echoed_to_every_member_and_acknowledged_to_the_sender(
        member) -> None:
    alice = await member("alice")
    bob = await member("bob")
    await alice.expect("user_joined")
    await alice.send(type="message", text="with a clientId", clientId="alice-1")
    events = [await alice.recv(), await alice.recv()]  # the ack and the echo, either first
    ack = next(event for event in events if event["type"] == "message_sent")
    echo = next(event for event in events if event["type"] == "message")
    assert ack == {"type": "message_sent", "room": "general", "seq": echo["seq"],
                   "clientId": "alice-1"}
    assert echo["clientId"] == "alice-1"
    assert (await bob.expect("message"))["clientId"] == "alice-1"
    await alice.say("without")
    assert "clientId" not in await alice.expect("message"), "no clientId: the echo is the ack"
    assert "clientId" not in await bob.expect("message")


async def test_a_resend_with_the_same_client_id_is_stored_and_delivered_once(
        member, connect: ClientFactory) -> None:
    """Issue 31: the same user sending the same clientId again (another connection, as
    after a reconnect) gets the first seq back; nothing is stored or delivered twice."""
    alice = await connect()
    identity = await alice.auth("alice")
    await alice.join("general")
    bob = await member("bob")
    await alice.send(type="message", text="once", clientId="k1")
    first = (await bob.expect("message"))["seq"]
    again = await connect()
    await again.resume(identity)
    await again.join("general")
    await again.send(type="message", text="once", clientId="k1")
    assert await again.skip_to("message_sent") == {
        "type": "message_sent", "room": "general", "seq": first, "clientId": "k1",
        "duplicate": True}
    await again.send(type="message", text="next", clientId="k2")  # a new key: a new message
    following = await bob.skip_to("message")
    assert (following["text"], following["seq"]) == ("next", first + 1), "once, not twice"
    await bob.send(type="history")
    history = await bob.expect("history")
    assert [m["text"] for m in history["messages"]].count("once") == 1


async def test_the_same_client_id_from_another_user_is_another_message(member) -> None:
    alice = await member("alice")
    bob = await member("bob")
    await alice.send(type="message", text="alice's", clientId="same")
    await bob.send(type="message", text="bob's", clientId="same")
    seqs = {(await bob.skip_to("message_sent"))["seq"],
            (await alice.skip_to("message_sent"))["seq"]}
    assert len(seqs) == 2


@pytest.mark.parametrize("client_id", ["", "r" * 65, 7, "with space", "é"])
async def test_a_client_id_is_1_to_64_printable_ascii_characters(member, client_id: object
                                                                 ) -> None:
    alice = await member("alice")
    await alice.send(type="message", text="x", clientId=client_id)
    await alice.expect_error("invalid_format")
    await alice.send(type="message", text="x", clientId="~" * 64)
    assert (await alice.skip_to("message_sent"))["clientId"] == "~" * 64


async def test_a_token_resumes_the_same_identity(connect: ClientFactory) -> None:
    first = await connect()
    issued = await first.auth("alice")
    assert len(issued["token"]) == 32
    again = await connect()
    await again.send(type="auth", name="alice", userId=issued["userId"], token=issued["token"])
    resumed = await again.expect("auth_success")
    assert (resumed["userId"], resumed["token"]) == (issued["userId"], issued["token"])


@pytest.mark.parametrize("token", [None, "0" * 32])
async def test_a_user_id_needs_its_own_token(connect: ClientFactory, token) -> None:
    first = await connect()
    issued = await first.auth("alice")
    impostor = await connect()
    await impostor.send(type="auth", name="mallory", userId=issued["userId"], token=token)
    await impostor.expect_error("invalid_token")
    assert (await impostor.auth("mallory"))["userId"] != issued["userId"]
