import msgpack

from node.backends.envelope import (
    UNSEQUENCED, Publication, base_of, close, joined, pack, split, unpack,
)


def test_an_envelope_survives_the_round_trip() -> None:
    publication = Publication("général", 7, b'{"type":"message"}', "session-1", epoch="e.3")
    assert unpack(pack(publication)) == publication


def test_the_wire_layout_is_room_seq_exclude_payload_presence_epoch() -> None:
    data = pack(Publication("r", UNSEQUENCED, b"{}", "", 12))
    assert msgpack.unpackb(data, raw=True) == [b"r", 0, b"", b"{}", 12, b""]


def test_a_forked_epoch_names_its_base_and_a_first_epoch_shares_nothing() -> None:
    assert base_of("9f3ac2.118") == 118
    assert base_of("9f3ac2") == 0


def test_a_template_closes_with_a_number_after_each_fragment() -> None:
    assert close((b'{"a":', b',"b":'), 3, 1_800_000_000_000) == b'{"a":3,"b":1800000000000}'


def test_a_stored_template_splits_back_into_its_fragments() -> None:
    template = (b'{"user":"a\\u0000b","userCount":', b',"presence":')
    assert split(joined(template)) == template
