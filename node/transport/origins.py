"""Which web pages may open chat sockets: a browser names the page's origin in `Origin`, and
a page from another site must not act for a user who is logged in here (cross-site WebSocket
hijacking). Clients that are not browsers send no Origin and are not concerned."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from node.transport.connections import Refusal

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(host: str, default: int | None) -> tuple[str, int | None] | None:
    """`host[:port]` split and lower-cased (IPv6 in brackets); None when malformed."""
    try:
        parts = urlsplit(f"//{host}")
        return (parts.hostname or "").lower(), parts.port or default
    except ValueError:
        return None


def same_origin(origin: str, host: str) -> bool:
    """Whether the page's origin is the site the request was sent to (`Host`)."""
    try:
        parts = urlsplit(origin)
        scheme, port = parts.scheme, parts.port
    except ValueError:
        return False
    default = DEFAULT_PORTS.get(scheme)
    if default is None or not parts.hostname:
        return False
    return _host_port(host, default) == (parts.hostname.lower(), port or default)


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """`--allowed-origins` and `--public-host`, applied to every chat upgrade."""

    allowed: frozenset[str]
    any_origin: bool
    public_host: str | None

    @classmethod
    def parse(cls, allowed_origins: str, public_host: str | None) -> OriginPolicy:
        listed = {o.strip().rstrip("/").lower() for o in allowed_origins.split(",") if o.strip()}
        return cls(frozenset(listed - {"*"}), "*" in listed,
                   public_host.lower() if public_host else None)

    def refusal(self, headers: dict[str, str]) -> Refusal | None:
        """Why this upgrade may not proceed, or None."""
        host = headers.get("host", "")
        if self.public_host is not None and host.lower() != self.public_host:
            return 421, "Misdirected Request", f"this server answers for {self.public_host}"
        origin = headers.get("origin")
        if origin is None or self.any_origin or origin.rstrip("/").lower() in self.allowed:
            return None
        if same_origin(origin, host):
            return None
        return 403, "Forbidden", f"pages from {origin[:200]} may not open chat sockets here"
