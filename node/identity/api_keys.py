"""The server API's keys: who may call it, and with which scope.

Keys come from the environment (`CHAT_API_KEYS`) or a file (`--api-keys-file`), never from
argv, as `<scope>:<key>` entries separated by commas or new lines. A `publish` key may post
messages; an `admin` key may do everything (moderation and queries too). A presented key is
compared with every configured key in constant time, so the time an answer takes says
nothing about how much of a key was right, nor which key was close.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass

MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 256
_KEY = re.compile(f"[!-~]{{{MIN_KEY_LENGTH},{MAX_KEY_LENGTH}}}")


class Scope(enum.StrEnum):
    PUBLISH = "publish"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    scope: Scope
    digest: bytes  # SHA-256 of the key: compared, and named in logs by its first bytes

    @property
    def name(self) -> str:
        """How logs and metrics name the key without revealing it."""
        return self.digest[:4].hex()

    def allows(self, needed: Scope) -> bool:
        return self.scope is Scope.ADMIN or needed is Scope.PUBLISH


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_api_keys(text: str) -> tuple[ApiKey, ...]:
    """The keys of `text`; ValueError names the first entry that is not `<scope>:<key>`
    with a known scope and a key of 16-256 printable ASCII characters."""
    keys = []
    for number, entry in enumerate(re.split(r"[,\n]", text), start=1):
        if not (entry := entry.strip()):
            continue
        scope, _, key = entry.partition(":")
        if scope not in Scope.__members__.values() or not _KEY.fullmatch(key):
            raise ValueError(f"entry {number} is not <publish|admin>:<key of {MIN_KEY_LENGTH}-"
                             f"{MAX_KEY_LENGTH} printable ASCII characters>")
        keys.append(ApiKey(Scope(scope), _digest(key)))
    if not keys:
        raise ValueError("no key given")
    return tuple(keys)


def find_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The configured key `presented` is, compared with each in constant time."""
    digest = _digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(key.digest, digest):
            found = key
    return found
