"""Client addresses: the peer itself, or the client a trusted gateway says it forwards.

A gateway in front of the nodes makes every connection come from the gateway; nginx names
the real client in `X-Real-IP` (and `X-Forwarded-For`). Those headers are believed only
from a configured trusted proxy: anyone else could write them to dodge per-address limits.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

UNIX = "unix"  # --trusted-proxies entry for peers on the node's Unix socket
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
PARSED = 4096  # addresses whose parse a node keeps: every session names one or two
MAX_ADDRESS = 64  # characters: the longest IPv6 address in text, with a zone (%eth0)


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[Network, ...]
    unix: bool

    def trusts(self, peer: str) -> bool:
        """Whether `peer` (an IP, or "" for a Unix socket peer) is a trusted proxy."""
        if not peer:
            return self.unix
        address = _parsed(peer)
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str, headers: Mapping[str, str]) -> str:
        """The client's address: from the forwarding headers when `peer` is trusted."""
        if not self.trusts(peer):
            return peer or UNIX
        real = _address(headers.get("x-real-ip", ""))
        if real:
            return real
        hops = [_address(hop) for hop in headers.get("x-forwarded-for", "").split(",")]
        for hop in reversed(hops):  # the nearest hop the trusted proxies did not add
            if hop and not self.trusts(hop):
                return hop
        return peer or UNIX


def _address(text: str) -> str:
    """`text` as an IP address in its canonical form, or "" when it is not one: a client
    address is a key of per-address budgets, never free text."""
    address = _parsed(text.strip())
    return "" if address is None else str(address)


@functools.lru_cache(maxsize=PARSED)
def _parsed(text: str) -> Address | None:
    """`text` as an IP address, or None. Kept for the next sessions of the same clients and
    gateways: `ipaddress` took 6 % of a node admitting a reconnect storm
    (docs/performance-history.md, *Admission in a storm*). Bounded; a header too long for an
    address is not parsed nor kept."""
    if len(text) > MAX_ADDRESS:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def trusted_networks(text: str) -> TrustedProxies:
    """Parse --trusted-proxies: IPs, CIDRs and `unix`, comma separated."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries if e != UNIX)
    return TrustedProxies(networks, UNIX in entries)


def peer_host(peername: object) -> str:
    """The host part of a transport's peername: "" for a Unix socket peer, "?" for a peer
    already gone (no name to give)."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return "" if isinstance(peername, str) else "?"
