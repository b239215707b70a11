"""The hooks' pieces without a network: settings, secrets, endpoints and the webhook bodies
made from queued room events."""

from __future__ import annotations

import base64
import json

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from node.backends.event_queue import QueuedEvent
from node.config import load_settings
from node.hooks.endpoints import EVENT_TYPES, parse_endpoint, recorded_by
from node.hooks.events import ban_payload, webhooks
from node.hooks.signing import Signer

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
REDIS = {"CHAT_REDIS_URL": "redis://127.0.0.1:1/0", "CHAT_HOOK_SECRET": SECRET}


def test_webhook_urls_repeat_as_flags_or_come_space_separated_from_the_environment() -> None:
    flags = load_settings(["--webhook-url", "http://a/1", "--webhook-url", "http://b/2#message"],
                          REDIS | {"CHAT_WEBHOOK_URL": "http://ignored/"})
    assert flags.webhook_url == ("http://a/1", "http://b/2#message")
    assert load_settings([], REDIS | {"CHAT_WEBHOOK_URL": "http://a/1  http://b/2"}
                         ).webhook_url == ("http://a/1", "http://b/2")
    assert load_settings([], REDIS).webhook_url == ()


@pytest.mark.parametrize("argv,env,complaint", [
    (["--webhook-url", "http://a/"], {"CHAT_HOOK_SECRET": SECRET}, "needs --redis-url"),
    (["--webhook-url", "http://a/"], {"CHAT_REDIS_URL": "redis://x"}, "signed"),
    (["--publish-hook", "http://a/"], {}, "signed"),
    (["--webhook-url", "ftp://a/"], REDIS, "not an http(s) URL"),
    (["--webhook-url", "http://a/#messages"], REDIS, "unknown event messages"),
    (["--webhook-url", "http://a/", "--webhook-url", "http://a/#message"], REDIS, "twice"),
    (["--publish-hook-failure", "maybe"], REDIS, "reject or accept"),
    (["--webhook-max-age", "0"], REDIS, "must be positive"),
    ([], {"CHAT_HOOK_SECRET": "secret"}, "whsec_"),
    ([], {"CHAT_HOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 23).decode()}, "24-64"),
    ([], {"CHAT_HOOK_SECRET": "whsec_not base64!"}, "base64"),
])
def test_bad_hook_settings_are_refused(argv, env, complaint: str, capsys) -> None:
    with pytest.raises(SystemExit):
        load_settings(argv, env)
    assert complaint in capsys.readouterr().err


def test_a_signature_verifies_with_the_standardwebhooks_library_and_a_change_does_not() -> None:
    body = b'{"room": "general"}'
    headers = Signer(SECRET).headers("evt_1", body)
    assert Webhook(SECRET).verify(body, headers) == {"room": "general"}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"general", b"random"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, {**headers, "webhook-id": "evt_2"})


def test_an_endpoint_wants_the_events_its_fragment_names_or_all() -> None:
    assert parse_endpoint("http://a/hook").events == frozenset(EVENT_TYPES)
    picked = parse_endpoint("https://a/hook?k=1#message,room_vacated")
    assert (picked.url, sorted(picked.events)) == ("https://a/hook?k=1",
                                                   ["message", "room_vacated"])
    assert picked.key == parse_endpoint("https://a/hook?k=1").key  # progress by URL
    recorded = recorded_by((picked,))
    assert (recorded.messages, recorded.presence, recorded.deletions, recorded.bans) == (
        True, True, False, False)
    assert not recorded_by(()).any


def _told(payload: dict, room: str = "general", event_id: str = "1700000000123-0") -> list:
    event = QueuedEvent(event_id, json.dumps(payload).encode(), 1700000000123)
    return [(kind, webhook_id, json.loads(body)) for kind, webhook_id, body
            in webhooks(room, event)]


def test_a_first_join_is_member_joined_then_room_occupied() -> None:
    told = _told({"type": "user_joined", "room": "general", "user": "alice", "userId": "u1",
                  "userCount": 1, "presence": 7})
    assert [kind for kind, _, _ in told] == ["member_joined", "room_occupied"]
    (_, first_id, joined), (_, second_id, occupied) = told
    assert joined == {"id": first_id, "type": "member_joined", "room": "general",
                      "timestamp": "2023-11-14T22:13:20.123Z",
                      "data": {"userId": "u1", "name": "alice", "userCount": 1,
                               "presence": 7}}
    assert occupied["data"] == {"userCount": 1, "presence": 7}
    assert first_id != second_id


def test_a_last_leave_is_member_left_then_room_vacated_and_others_are_one_webhook() -> None:
    left = _told({"type": "user_left", "room": "general", "user": "bob", "userId": "u2",
                  "userCount": 0, "presence": 9})
    assert [kind for kind, _, _ in left] == ["member_left", "room_vacated"]
    assert [kind for kind, _, _ in _told({"type": "user_left", "room": "general",
                                           "user": "bob", "userId": "u2", "userCount": 3,
                                           "presence": 9})] == ["member_left"]
    message = _told({"type": "message", "room": "general", "text": "hi", "seq": 4})
    assert message[0][2]["data"] == {"text": "hi", "seq": 4}
    deleted = _told({"type": "message_deleted", "room": "general", "seq": 4})
    assert deleted[0][2]["data"] == {"seq": 4}


def test_a_ban_from_the_cluster_has_no_room_and_a_replay_keeps_its_body_and_id() -> None:
    banned = _told(json.loads(ban_payload("u1", 1700000060.0, "")), room="@control")
    assert banned[0][2]["room"] is None
    assert banned[0][2]["data"] == {"userId": "u1", "until": "2023-11-14T22:14:20.000Z"}
    body = json.dumps(banned[0][2]).encode()
    replayed = list(webhooks("@control", QueuedEvent("1800000000000-0", body, 1800000000000,
                                                     webhook_id=banned[0][1], only="abc")))
    assert replayed == [("user_banned", banned[0][1], body)]
