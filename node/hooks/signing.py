"""Signatures of the hook calls and webhooks a node sends, per Standard Webhooks (the
`standardwebhooks` library): headers webhook-id, webhook-timestamp and webhook-signature,
which any receiver verifies with the same library in its language."""

from __future__ import annotations

import base64
import binascii
import time
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"
SECRET_BYTES = (24, 64)  # the specification's advice on the key's length


class Signer:
    """Signs bodies with the cluster's hook secret (`whsec_` and base64 of 24-64 bytes)."""

    def __init__(self, secret: str) -> None:
        if not secret.startswith(PREFIX):
            raise ValueError(f"it must start with {PREFIX} (Standard Webhooks' format)")
        try:
            key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
        except binascii.Error:
            raise ValueError(f"what follows {PREFIX} is not base64") from None
        if not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
            raise ValueError(f"it must hold {SECRET_BYTES[0]}-{SECRET_BYTES[1]} bytes, not "
                             f"{len(key)}")
        self._webhook = Webhook(key)

    def headers(self, webhook_id: str, body: bytes, now: float | None = None
                ) -> dict[str, str]:
        """The headers of one signed POST of `body` (JSON)."""
        at = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
        return {"webhook-id": webhook_id,
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": self._webhook.sign(webhook_id, at, body),
                "content-type": "application/json"}
