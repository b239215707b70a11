"""Client addresses from a trusted gateway's headers: IP addresses only, never free text."""

from __future__ import annotations

import pytest

from node.transport.addresses import PARSED, UNIX, _parsed, trusted_networks

GATEWAY = trusted_networks("unix,10.0.0.0/8")


def test_a_trusted_gateway_names_the_client() -> None:
    assert GATEWAY.client("", {"x-real-ip": " 203.0.113.7 "}) == "203.0.113.7"
    assert GATEWAY.client("10.1.2.3", {"x-forwarded-for": "203.0.113.7, 10.9.9.9"}) == (
        "203.0.113.7")
    assert GATEWAY.client("", {"x-real-ip": "2001:DB8::0:1"}) == "2001:db8::1"  # canonical


@pytest.mark.parametrize("claimed", ["not-an-ip", "203.0.113.7x", "a" * 5000, "1.2.3.4/8", ""])
def test_a_header_that_is_not_an_address_is_ignored(claimed: str) -> None:
    assert GATEWAY.client("", {"x-real-ip": claimed}) == UNIX
    assert GATEWAY.client("10.1.2.3", {"x-forwarded-for": claimed}) == "10.1.2.3"


def test_an_untrusted_peer_is_its_own_address_whatever_it_claims() -> None:
    assert GATEWAY.client("198.51.100.1", {"x-real-ip": "203.0.113.7"}) == "198.51.100.1"


def test_parsed_addresses_are_kept_boundedly_and_the_longest_ipv6_still_parses() -> None:
    longest = "fe80:0000:0000:0000:0000:0000:0000:0001%" + "e" * 15  # with an interface zone
    assert GATEWAY.client("", {"x-real-ip": longest}) == "fe80::1%" + "e" * 15
    for n in range(PARSED + 10):  # more distinct addresses than are kept
        assert GATEWAY.client("", {"x-real-ip": f"198.51.{n // 256}.{n % 256}"}) == (
            f"198.51.{n // 256}.{n % 256}")
    assert _parsed.cache_info().currsize <= PARSED
