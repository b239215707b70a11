"""What a display name and a room name may be. The rules raise plain errors; the client
protocol (node.chat.protocol) turns them into `invalid_name` / `invalid_room`, and the JWT
verifier into a refused token, so identity does not depend on the wire protocol."""

from __future__ import annotations

import re
import sys
import unicodedata

from node.identity import names

MAX_NAME = 32
ROOM_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class InvalidName(ValueError):
    """A display name the cluster does not accept; the message says why."""


class InvalidRoom(ValueError):
    """A room name the cluster does not accept; the message says why."""


def checked_name(name: str) -> str:
    """A display name trimmed, composed (NFC) and validated: printable, something a reader
    can see, and nothing that draws nothing or disguises a letter (names.refusal)."""
    trimmed = unicodedata.normalize("NFC", name.strip())
    if not 1 <= len(trimmed) <= MAX_NAME or not trimmed.isprintable():
        raise InvalidName(f"Name must be 1-{MAX_NAME} printable characters")
    if not names.visible(trimmed):
        raise InvalidName("Name must have a visible character")
    if (why := names.refusal(trimmed)) is not None:
        raise InvalidName(f"Name must not hold {why}")
    return trimmed


def checked_room(room: str | None) -> str:
    """A room name matching 1-64 characters of [A-Za-z0-9._-]."""
    if room is None or not ROOM_PATTERN.fullmatch(room):
        raise InvalidRoom("Room name must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return sys.intern(room)  # every member's session shares one copy of the name
