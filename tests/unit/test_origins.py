"""Which pages may open chat sockets."""

from __future__ import annotations

import pytest

from node.transport.origins import OriginPolicy, same_origin


@pytest.mark.parametrize("origin, host, same", [
    ("http://chat.example", "chat.example", True),
    ("http://chat.example:80", "chat.example", True),
    ("https://chat.example", "chat.example", True),  # TLS ended at the proxy: Host has no port
    ("https://chat.example", "chat.example:443", True),
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("http://[::1]:8080", "[::1]:8080", True),
    ("http://CHAT.example", "chat.EXAMPLE", True),
    ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
    ("http://evil.example", "chat.example", False),
    ("http://chat.example.evil", "chat.example", False),
    ("null", "chat.example", False),
    ("file://", "chat.example", False),
    ("http://chat.example:99999", "chat.example", False),
    ("http://chat.example", "", False),
])
def test_same_origin_compares_host_and_effective_port(origin: str, host: str, same: bool
                                                      ) -> None:
    assert same_origin(origin, host) is same


def _refusal(policy: OriginPolicy, **headers: str):  # type: ignore[no-untyped-def]
    status = policy.refusal({"host": "chat.example", **headers})
    return status[0] if status else None


def test_by_default_only_browsers_on_other_sites_are_refused() -> None:
    policy = OriginPolicy.parse("", None)
    assert _refusal(policy) is None  # not a browser
    assert _refusal(policy, origin="http://chat.example") is None
    assert _refusal(policy, origin="http://evil.example") == 403
    assert _refusal(policy, origin="null") == 403


def test_listed_origins_pass_and_a_star_must_be_explicit() -> None:
    listed = OriginPolicy.parse("https://app.example, http://localhost:3000/", None)
    assert _refusal(listed, origin="https://app.example") is None
    assert _refusal(listed, origin="http://localhost:3000") is None
    assert _refusal(listed, origin="https://other.example") == 403
    assert _refusal(OriginPolicy.parse("*", None), origin="https://other.example") is None


def test_a_public_host_refuses_requests_for_any_other() -> None:
    policy = OriginPolicy.parse("", "chat.example")
    assert _refusal(policy) is None
    assert policy.refusal({"host": "10.0.0.5:8000"})[0] == 421  # type: ignore[index]
    assert policy.refusal({})[0] == 421  # type: ignore[index]
