"""Secrets the local launcher generates: the admin token, the Redis password and the hooks' signing secret."""

from __future__ import annotations

import base64
import secrets


def new_hook_secret() -> str:
    """A Standard Webhooks secret for the nodes' hooks and webhooks: `whsec_` and the base64
    of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_secret() -> str:
    """A random URL-safe token (192 bits); may begin with "-", so it never travels in argv."""
    return secrets.token_urlsafe(24)
