"""Secrets the local launcher generates: the admin token and the Redis password."""

from __future__ import annotations

import secrets


def new_secret() -> str:
    """A random URL-safe token (192 bits); may begin with "-", so it never travels in argv."""
    return secrets.token_urlsafe(24)
