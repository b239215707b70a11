"""JWT identity: tokens from the operator's identity provider, verified by PyJWT.

The algorithm is fixed by configuration, never read from the token: a shared secret means
HS256 only, a public key means RS256 (RSA) or ES256 (EC) only. So `alg: none` and a token
HMAC-signed with the public key (the HS/RS confusion) are refused like any bad signature.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from node.identity.rules import InvalidName, InvalidRoom, checked_name, checked_room

MAX_SUBJECT = 128
DEFAULT_MAX_TTL = 86400.0  # --jwt-max-ttl
MAX_ROOMS_CLAIMED = 1000


class TokenRefused(Exception):
    """A token that does not prove an identity; the message says why, for the client."""


@dataclass(frozen=True, slots=True)
class Claims:
    """Who a verified token says the client is, and until when."""

    user_id: str  # `sub`
    name: str  # `name`, or `sub` when absent
    expires: float  # `exp`, seconds since the Unix epoch
    rooms: frozenset[str] | None  # `rooms`: the only rooms it may join; None = any

    def may_join(self, room: str) -> bool:
        return self.rooms is None or room in self.rooms


@dataclass(frozen=True, slots=True)
class JwtVerifier:
    """Verifies tokens against one key, one algorithm family, and optional aud/iss."""

    key: Any
    algorithms: tuple[str, ...]
    audience: str | None = None
    issuer: str | None = None
    max_ttl: float = DEFAULT_MAX_TTL  # seconds a token may still live when presented

    @classmethod
    def with_secret(cls, secret: str, audience: str | None = None,
                    issuer: str | None = None,
                    max_ttl: float = DEFAULT_MAX_TTL) -> JwtVerifier:
        return cls(secret, ("HS256",), audience, issuer, max_ttl)

    @classmethod
    def with_public_key(cls, path: str, audience: str | None = None,
                        issuer: str | None = None,
                        max_ttl: float = DEFAULT_MAX_TTL) -> JwtVerifier:
        """RS256 for an RSA key, ES256 for an EC key; anything else is a configuration error."""
        key = serialization.load_pem_public_key(Path(path).read_bytes())
        if isinstance(key, rsa.RSAPublicKey):
            return cls(key, ("RS256",), audience, issuer, max_ttl)
        if isinstance(key, ec.EllipticCurvePublicKey):
            return cls(key, ("ES256",), audience, issuer, max_ttl)
        raise ValueError(f"{path}: an RSA or EC public key is needed (RS256 or ES256)")

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; `TokenRefused` for anything else."""
        try:
            payload = jwt.decode(
                token, self.key, algorithms=list(self.algorithms), audience=self.audience,
                issuer=self.issuer, options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("Token expired") from None
        except jwt.PyJWTError as error:
            raise TokenRefused(f"Invalid token: {error}") from None
        claims = _claims(payload)
        if claims.expires - time.time() > self.max_ttl:
            raise TokenRefused(f"Token lives longer than the {self.max_ttl:g} s this cluster "
                               "allows (--jwt-max-ttl)")
        return claims


def _claims(payload: dict[str, Any]) -> Claims:
    subject, name, rooms = payload["sub"], payload.get("name"), payload.get("rooms")
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT:
        raise TokenRefused(f"Invalid token: sub must be 1-{MAX_SUBJECT} characters")
    if rooms is not None and not (isinstance(rooms, list) and len(rooms) <= MAX_ROOMS_CLAIMED
                                  and all(isinstance(room, str) for room in rooms)):
        raise TokenRefused("Invalid token: rooms must be a list of room names")
    try:
        display = checked_name(name if isinstance(name, str) else subject[:32])
        allowed = None if rooms is None else frozenset(checked_room(room) for room in rooms)
    except (InvalidName, InvalidRoom) as error:
        raise TokenRefused(f"Invalid token: {error}") from None
    return Claims(subject, display, float(payload["exp"]), allowed)


def mint(key: Any, algorithm: str, subject: str, name: str | None = None,
         rooms: list[str] | None = None, ttl: float = 3600.0, audience: str | None = None,
         issuer: str | None = None) -> str:
    """A token as an identity provider would issue it (operators and tests)."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + int(ttl)}
    optional = {"name": name, "rooms": rooms, "aud": audience, "iss": issuer}
    payload.update({claim: value for claim, value in optional.items() if value is not None})
    return jwt.encode(payload, key, algorithm=algorithm)

