"""Resume tokens: a client that reconnects proves it is the user it was."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: bytes, user_id: str) -> str:
    """The token that lets `user_id` authenticate again, on any node of the cluster."""
    return hmac.new(secret, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def verify(secret: bytes, user_id: str, token: str) -> bool:
    """Whether `token` is `user_id`'s; any string may come from a client, so compare bytes."""
    return hmac.compare_digest(sign(secret, user_id).encode(), token.encode())
