"""The containerised gateway's view of a scaled service: one upstream per resolved address."""

from __future__ import annotations

from gateway.serve import replicas


def test_every_address_of_the_name_is_an_upstream_once() -> None:
    assert "127.0.0.1:8000" in replicas("localhost", 8000)
    assert len(set(replicas("localhost", 8000))) == len(replicas("localhost", 8000))


def test_ipv6_addresses_are_bracketed() -> None:
    assert replicas("::1", 8000) == ["[::1]:8000"]


def test_a_name_that_does_not_resolve_has_no_replicas() -> None:
    assert replicas("no-such-service.invalid", 8000) == []
