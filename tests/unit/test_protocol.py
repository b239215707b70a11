import json

import pytest

from node.backends.envelope import close
from node.chat.protocol import (
    Auth, ChatError, ChatMessage, ErrorCode, Join, Parser, Pong, SendMessage, frame,
    iso_timestamp, message_id, message_template, presence_templates,
)


@pytest.fixture
def parser() -> Parser:
    return Parser(max_text=5)


def test_parses_each_type_into_a_typed_message(parser: Parser) -> None:
    assert parser.parse('{"type":"auth","name":" al "}') == Auth(name="al")
    assert parser.parse('{"type":"join","room":"a.b-c_9"}') == Join(room="a.b-c_9")
    assert parser.parse('{"type":"message","text":"hi","extra":1}') == SendMessage(text="hi")
    assert parser.parse('{"type":"pong","timestamp":[1]}') == Pong(timestamp=[1])


@pytest.mark.parametrize(("raw", "code"), [
    ("{", ErrorCode.INVALID_FORMAT),
    ("null", ErrorCode.INVALID_FORMAT),
    ('{"type":1}', ErrorCode.INVALID_FORMAT),
    ('{"type":"nope"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type":"auth","name":""}', ErrorCode.INVALID_NAME),
    ('{"type":"join","room":"a b"}', ErrorCode.INVALID_ROOM),
    ('{"type":"message","text":null}', ErrorCode.TEXT_REQUIRED),
    ('{"type":"message","text":"123456"}', ErrorCode.TEXT_TOO_LONG),
    ('{"type":"message","text":7}', ErrorCode.INVALID_FORMAT),
    ('{"type":"message","text":" \\n "}', ErrorCode.TEXT_REQUIRED),
    ('{"type":"pong","timestamp":' + "[" * 5000 + "]" * 5000 + "}", ErrorCode.INVALID_FORMAT),
])
def test_each_bad_frame_has_one_code(parser: Parser, raw: str, code: ErrorCode) -> None:
    with pytest.raises(ChatError) as error:
        parser.parse(raw)
    assert error.value.code is code


def test_a_stamped_template_is_the_message_json_with_its_seq() -> None:
    message = ChatMessage(room="r", user="u", user_id="id", text='say "hi"', timestamp="t", id="x")
    payload = close((message_template(message),), 42)
    assert json.loads(payload) == {"type": "message", "room": "r", "user": "u", "userId": "id",
                                   "text": 'say "hi"', "timestamp": "t", "id": "x", "seq": 42}


@pytest.mark.parametrize(("size", "header"), [
    (0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f" + (65536).to_bytes(8, "big")),
])
def test_frames_are_unmasked_text_frames_with_the_shortest_length(size: int, header: bytes) -> None:
    payload = b"x" * size
    assert frame(payload) == header + payload


def test_presence_templates_close_into_the_presence_events() -> None:
    joined, left = presence_templates("r", "u1", 'Al "the" ice')
    for template, kind in ((joined, "user_joined"), (left, "user_left")):
        assert json.loads(close(template, 3, 1_800_000_000_001)) == {
            "type": kind, "user": 'Al "the" ice', "userId": "u1", "room": "r",
            "userCount": 3, "presence": 1_800_000_000_001}


def test_a_message_id_is_32_hex_digits_and_new_each_time() -> None:
    ids = {message_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(id_) == 32 and int(id_, 16) >= 0 for id_ in ids)


@pytest.mark.parametrize(("nanos", "text"), [
    (1_700_000_000_000_000_000, "2023-11-14T22:13:20.000Z"),
    (1_700_000_000_999_999_999, "2023-11-14T22:13:20.999Z"),  # truncated, as isoformat does
    (1_700_000_001_000_999_999, "2023-11-14T22:13:21.000Z"),  # the next second, not cached
    (1_700_000_000_042_000_000, "2023-11-14T22:13:20.042Z"),  # and back
])
def test_a_timestamp_is_iso_utc_with_milliseconds(monkeypatch: pytest.MonkeyPatch, nanos: int,
                                                  text: str) -> None:
    monkeypatch.setattr("node.chat.protocol.time.time_ns", lambda: nanos)
    assert iso_timestamp() == text
