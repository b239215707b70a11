"""The storm's raw client resumes as the library does and notices what went missing: its checks
must be able to fail."""

from __future__ import annotations

import json
import struct
from typing import Any

from loadtest.rawsession import RawSession
from tests.unit.test_rawclient import FakeTransport

UPGRADED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"


def frame(event: dict[str, Any]) -> bytes:
    payload = json.dumps(event).encode()
    if len(payload) < 126:
        return struct.pack("!BB", 0x81, len(payload)) + payload
    return struct.pack("!BBH", 0x81, 126, len(payload)) + payload


def message(seq: int, client_id: str = "x") -> dict[str, Any]:
    return {"type": "message", "seq": seq, "text": "1764103884123456789", "clientId": client_id}


def joined(seq: int, history: tuple[dict[str, Any], ...] = (), **more: Any) -> dict[str, Any]:
    return {"type": "room_joined", "seq": seq, "epoch": "e1", "history": list(history), **more}


def connect(session: RawSession, *events: dict[str, Any]) -> list[dict[str, Any]]:
    """A connection of `session` that receives `events` (in a stream cut in two mid-frame);
    returns what it sent."""
    transport = FakeTransport()
    session.connection_made(transport)  # type: ignore[arg-type]
    stream = UPGRADED + b"".join(frame(event) for event in events)
    session.data_received(stream[:len(UPGRADED) + 3])
    session.data_received(stream[len(UPGRADED) + 3:])
    return [json.loads(w[6:]) for w in transport.written[1:]]


def lose(session: RawSession) -> None:
    session.connection_lost(None)


async def test_a_resume_comes_back_as_the_same_user_from_the_last_seq() -> None:
    session = RawSession("ws://127.0.0.1:1/ws", "m", "r")
    sent = connect(session, {"type": "auth_success", "userId": "u1", "token": "t1",
                             "node": "node1"}, joined(5), message(6), message(7))
    assert sent == [{"type": "auth", "name": "m"}, {"type": "join", "room": "r"}]
    lose(session)
    session.resume_after = 0.0
    sent = connect(session, {"type": "auth_success", "userId": "u1", "token": "t1",
                             "node": "node2"},
                   joined(9, (message(8), message(9)), recovered=True), message(10))
    assert sent == [{"type": "auth", "name": "m", "userId": "u1", "token": "t1"},
                    {"type": "join", "room": "r", "since": 7, "epoch": "e1"}]
    seen = session.seen
    assert (seen.last_seq, seen.gaps, seen.duplicates) == (10, 0, 0)
    assert (seen.recovered, seen.node) == (True, "node2") and seen.resumed_at is not None
    assert len(seen.latencies) == 5


async def test_a_skipped_seq_a_duplicate_and_a_gap_left_by_a_resume_are_counted() -> None:
    session = RawSession("ws://127.0.0.1:1/ws", "m", "r")
    connect(session, joined(1), message(2), message(4), message(4))
    assert (session.seen.gaps, session.seen.duplicates) == (1, 1)
    lose(session)
    connect(session, joined(9, (message(8), message(9)), recovered=False))
    assert session.seen.gaps == 2 and session.seen.last_seq == 9


async def test_a_message_not_seen_stored_is_sent_again_with_its_client_id() -> None:
    session = RawSession("ws://127.0.0.1:1/ws", "m", "r")
    transport = FakeTransport()
    session.connection_made(transport)  # type: ignore[arg-type]
    session.data_received(UPGRADED + frame(joined(1)))
    assert session.say() and not session.say()  # one at a time, until stored
    first = transport.written[-1]
    lose(session)
    sent_again = FakeTransport()
    session.connection_made(sent_again)  # type: ignore[arg-type]
    session.data_received(UPGRADED + frame(joined(1)))
    assert sent_again.written[-1] == first
    client_id = json.loads(first[6:])["clientId"]
    session.data_received(frame(message(2, client_id)))
    assert session.accepted == [2] and session.say()


async def test_a_refused_upgrade_is_retried_no_sooner_than_its_retry_after() -> None:
    session = RawSession("ws://127.0.0.1:1/ws", "m", "r")
    session.connection_made(FakeTransport())  # type: ignore[arg-type]
    session.data_received(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\n\r\n")
    assert session.retry_after == 2.0


async def test_a_final_close_code_ends_the_reconnecting() -> None:
    session = RawSession("ws://127.0.0.1:1/ws", "m", "r")
    connect(session, joined(1))
    session.data_received(struct.pack("!BBH", 0x88, 2, 4001))
    await session.run()  # returns at once: it was told not to come back
