"""The inter-node envelope: one room event as every subscribed node receives it."""

from __future__ import annotations

from dataclasses import dataclass

UNSEQUENCED = 0


@dataclass(frozen=True, slots=True)
class Publication:
    """A room event ready for local fan-out.

    `payload` is the client JSON, encoded once by the publisher; `seq` is the room's message
    sequence number, or `UNSEQUENCED` for presence events; `exclude` names a member that must
    not receive it (the joiner does not get its own `user_joined`).
    """

    room: str
    seq: int
    payload: bytes
    exclude: str = ""
