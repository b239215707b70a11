import msgpack

from node.envelope import UNSEQUENCED, Publication, pack, unpack


def test_an_envelope_survives_the_round_trip() -> None:
    publication = Publication("général", 7, b'{"type":"message"}', "session-1")
    assert unpack(pack(publication, "node1")) == publication


def test_the_wire_layout_is_room_seq_exclude_payload_origin() -> None:
    data = pack(Publication("r", UNSEQUENCED, b"{}"), "node9")
    assert msgpack.unpackb(data, raw=True) == [b"r", 0, b"", b"{}", b"node9"]
