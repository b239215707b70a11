"""The node limits the load tools run with, raised explicitly and printed with every result.

A benchmark's generator sends for thousands of users from a few loopback addresses as fast as
a step asks: the defaults, made for real users behind real addresses, would refuse it. The
tools raise exactly these limits (the nodes' and the gateway's WebSockets per address), say
so, and leave every other default as shipped.
"""

from __future__ import annotations

BENCHMARK_LIMITS: dict[str, int] = {
    "rate": 100_000, "burst": 100_000, "join_rate": 100_000, "join_burst": 100_000,
    "frame_rate": 100_000, "frame_burst": 100_000,
    "user_rate": 100_000, "user_burst": 100_000,
    "address_rate": 1_000_000, "address_burst": 1_000_000,
    "max_connections": 200_000, "max_connections_per_address": 200_000,
    "handshake_backlog": 200_000,  # the tools connect thousands of members at once
    "max_rooms": 200_000,  # and make thousands of rooms, all from one address
    "address_rooms_per_hour": 1_000_000, "address_identities_per_minute": 100_000_000,
}

GATEWAY_LIMITS: dict[str, int] = {"ws_per_address": 65_535}  # nginx's most, when in front


def node_flags(limits: dict[str, int] = BENCHMARK_LIMITS) -> list[str]:
    """The limits as `python -m node` flags."""
    return [f"--{name.replace('_', '-')}={value}" for name, value in limits.items()]


def describe(limits: dict[str, int] = BENCHMARK_LIMITS) -> str:
    return "node limits raised for the load: " + " ".join(node_flags(limits))
