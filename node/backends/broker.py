"""The broker seam: room pub/sub plus the per-room message log (seq and history).

Publishing a message assigns its seq, stores it and publishes it as one atomic step, so
history and the live stream always agree. Nothing above this seam knows how it is done.

The broker pushes what arrives into `BrokerEvents` (the hub) and asks it which rooms are
wanted, so the hub is the one truth of the node's subscriptions: after a reconnect the
broker subscribes exactly those, whatever it or its client library remembered.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.backends.envelope import Publication, base_of
from node.ratelimit import Budget


class BrokerEvents(Protocol):
    """What a broker delivers to, and asks about, the node's local rooms."""

    def publication(self, publication: Publication) -> None:
        """A publication of a subscribed room, the moment it arrived."""
        ...

    async def reconnected(self) -> None:
        """The broker is back after an outage and subscribed to `wanted_rooms` again:
        publications of the outage may be missing, and shared state may have forgotten
        this node."""
        ...

    def wanted_rooms(self) -> Collection[str]:
        """The rooms whose publications the node needs now."""
        ...


# The channel every node listens on for commands to the whole cluster (the server API's
# disconnect): a room name no room can have (room names are [A-Za-z0-9._-]).
CONTROL = "@control"


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A sender's own key for one message (its user and the client's `clientId`): a second
    publish with the same key within `window` seconds stores and delivers nothing and is
    answered with the first one's seq (`AlreadyStored`)."""

    key: str
    window: float


class AlreadyStored(Exception):
    """A publish whose idempotency key was stored before, as `seq`: nothing was done."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"already stored as seq {seq}")
        self.seq = seq


class Muted(Exception):
    """A publish refused because its sender is muted in the room; nothing was stored."""


class BudgetSpent(Exception):
    """A publish refused because one of its budgets is spent; nothing was stored."""

    def __init__(self, budget: Budget) -> None:
        super().__init__(f"{budget.kind} budget spent")
        self.budget = budget


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """Stored messages of a room (JSON payloads, oldest first) and where the room stands.

    `epoch` names this incarnation of the room's history: it changes when the history is lost
    (a Redis restart without persistence), so seqs from before cannot be trusted. `first_seq`
    is the oldest seq the room keeps; `more` says it keeps older messages than the first of
    `messages` (the reader pages them with `before`).
    """

    messages: list[bytes]
    seq: int
    epoch: str
    first_seq: int
    more: bool = False
    parent: str = ""  # the epoch this one forked from ("" for none)

    def covers(self, since: int, epoch: str | None) -> bool:
        """True when every message after `since` of `epoch` is still retained: the same
        incarnation, or the one this forked from up to the fork's base (the seqs both
        share)."""
        return self._continues(since, epoch) and since <= self.seq \
            and self.first_seq <= since + 1

    def forked_from(self, epoch: str | None) -> bool:
        """True when `epoch` is the one this forked from: its seqs after the fork's base may
        exist nowhere else now."""
        return bool(self.parent) and epoch == self.parent

    def _continues(self, since: int, epoch: str | None) -> bool:
        return epoch is None or epoch == self.epoch or (
            self.forked_from(epoch) and since <= base_of(self.epoch))


class Broker(Protocol):
    """Delivers room events to every subscribed node, this one included."""

    @property
    def ready(self) -> bool:
        """True while the broker can publish and deliver."""
        ...

    async def start(self, events: BrokerEvents) -> None:
        """Connect and deliver every publication of a subscribed room to `events`."""
        ...

    async def close(self) -> None:
        """Stop delivering and release connections."""
        ...

    async def subscribe(self, room: str) -> None:
        """Receive the room's publications; returns once delivery is active.

        Raises `node.backends.errors.Unavailable`, like every method below, when the broker is
        down."""
        ...

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving the room's publications; never fails (repaired on reconnect)."""
        ...

    async def publish_message(self, room: str, template: bytes, budgets: Sequence[Budget],
                              seen: int, seen_epoch: str = "",
                              idempotency: Idempotency | None = None, sender: str = "") -> int:
        """Take one message from every budget, assign the next seq, store the stamped
        message and publish it, as one step; returns the seq. Raises `BudgetSpent` (and
        does nothing) when a budget is spent, `Muted` when the `sender` (a user id) is muted
        in the room, and `AlreadyStored` (doing nothing) when a message with the same
        `idempotency` key was stored within its window; with a key, a publish whose
        connection failed may be run again (it cannot store twice).

        `seen` is the newest seq of the room this node delivered (in `seen_epoch`). A
        backend that forgot messages it had published in that epoch (a restart that lost
        the newest writes) numbers on above it, in a new epoch whose history starts with
        this message; one that cannot vouch for the seqs after its last (a failover: the old
        primary may have acknowledged others under the same seqs) numbers on from its last,
        in a new epoch. An epoch
        names its base (`node.backends.envelope.base_of`), the last seq it shares with the one
        before; every receiver of the next message learns of the fork.

        Raises `node.backends.errors.OutcomeUnknown` when the publish was sent and no answer came:
        it may have been stored (it will not be later)."""
        ...

    async def publish_event(self, room: str, payload: bytes) -> None:
        """Publish `payload` to the room's subscribers as an unsequenced event, stored
        nowhere (on `CONTROL`: a command to every node)."""
        ...

    async def replace_message(self, room: str, seq: int, stored: bytes, replacement: bytes,
                              event: bytes) -> bool | None:
        """Put `replacement` in the place of message `seq` of the room's history if it still
        is `stored`, and publish `event` to the room in its order, as one step: True when
        done, False when the history holds no message `seq`, None when it changed meanwhile
        (read it again)."""
        ...

    async def mute(self, room: str, user_id: str, until: float) -> None:
        """Refuse the user's messages to the room until `until` (Unix seconds); a time past
        lifts a mute."""
        ...

    async def history(self, room: str, limit: int, after: int | None = None,
                      before: int | None = None, max_bytes: int | None = None
                      ) -> HistoryWindow:
        """The newest `limit` stored messages with a seq above `after` and below `before`
        (each bound when given), and with `max_bytes` no more of the newest of those than
        fit in that many bytes (but at least one)."""
        ...
