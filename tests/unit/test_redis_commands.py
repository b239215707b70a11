"""Commands as the lean Redis connections write them: RESP arrays of bulk strings."""

from node.backends.redis.connection import encode


def test_a_command_is_an_array_of_bulk_strings_of_its_bytes_text_and_numbers() -> None:
    assert encode((b"EVALSHA", "é", 7, b"")) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\n\xc3\xa9\r\n$1\r\n7\r\n$0\r\n\r\n")
