"""A checker in the style of Jepsen's for one room (issue 29): what the cluster acknowledged,
what every member was given, and what it was told it missed.

Writers send uniquely numbered texts and record each acknowledgement (the seq the room
gave it) with its time; a `unavailable` refusal or a send that timed out is retried with the
same text and `clientId`, as a client told "nothing was done, retry" or left without an
answer does (the client library itself sends again after a resume or an `unknown_outcome`,
with the same `clientId`: the room stores it once). Members record every delivery (live or in a resumed
history) and every loss report: a `room_joined` with `"recovered": false`, a
`messages_lost` or a `history_reset` event. Afterwards, per member:

- lost: acknowledged texts never delivered, acknowledged before the member's last report
  excused (it was told) — must be none;
- duplicates: a text delivered twice (a retried send stored twice, or a repeat) — none;
- disorder: deliveries whose seq goes backwards within one epoch — none;
- conflicts (over all members): one seq of one epoch naming two different texts — none (a
  split brain numbered two histories alike).

Besides, every member's member list is sampled every VIEW_SAMPLE seconds for everyone in
the room (every member and writer): the time from the fault to the last sample in which
some list lacked someone is how long the presence view took to be complete again; a list
still lacking someone when the run ends fails the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from node.client import HEARTBEAT, ChatClient, ClientClosed, SendFailed

# A writer waits longer than a node waits for Redis (node.backends.redis.support.COMMAND_TIMEOUT):
# what it is told decides, not its own patience.
SEND_TIMEOUT = 15.0
QUIET_TIMEOUT = 30.0  # how long members may take to catch up after the writers stopped
VIEW_SAMPLE = 0.1  # seconds between two looks at every member's member list


@dataclass
class Member:
    client: ChatClient
    deliveries: list[tuple[str, int, str]] = field(default_factory=list)  # epoch, seq, text
    reports: list[float] = field(default_factory=list)  # when it was told of a loss
    epoch: str = ""

    async def record(self) -> None:
        async for event in self.client.events():
            kind = event["type"]
            if kind == "room_joined":
                self.epoch = event["epoch"]
                if event.get("recovered") is False:
                    self.reports.append(time.monotonic())
            elif kind == "messages_lost":
                self.reports.append(time.monotonic())
            elif kind == "history_reset":
                self.epoch = event["epoch"]
                self.reports.append(time.monotonic())
            elif kind == "message":
                self.deliveries.append((self.epoch, event["seq"], event["text"]))

    def delivered(self) -> set[str]:
        return {text for _, _, text in self.deliveries}


@dataclass
class Writer:
    client: ChatClient
    name: str
    acks: list[tuple[str, float]] = field(default_factory=list)  # text, when acknowledged
    refusals: Counter[str] = field(default_factory=Counter)

    async def write(self, stop: asyncio.Event, interval: float) -> None:
        number = 0
        while not stop.is_set():
            number += 1
            text = f"{self.name}-{number}"
            while not stop.is_set():
                try:
                    await self.client.send(text, timeout=SEND_TIMEOUT, client_id=text)
                    self.acks.append((text, time.monotonic()))
                    break
                except (SendFailed, TimeoutError) as refused:
                    self.refusals[str(refused).split(":")[0] or "timeout"] += 1
                    await asyncio.sleep(interval)
                except ClientClosed:
                    return
            await asyncio.sleep(interval)

    def longest_wait(self, started: float) -> float:
        """The longest time without an acknowledgement (from `started`)."""
        times = [started, *(when for _, when in self.acks)]
        return max(later - earlier for earlier, later in zip(times, times[1:], strict=False))


@dataclass
class Verdict:
    lost: dict[str, list[str]]
    duplicates: dict[str, list[str]]
    disorder: dict[str, int]
    reported: dict[str, int]  # loss reports each member got
    acknowledged: int
    unavailable: dict[str, float]  # per writer: its longest time without an acknowledgement
    refusals: Counter[str]
    conflicts: dict[tuple[str, int], set[str]]
    # seconds from the fault to a complete presence view on every member (0: never wrong),
    # and how the last wrong views differed
    view_complete: float = 0.0
    last_wrong_views: list[str] = field(default_factory=list)

    @property
    def unavailable_s(self) -> float:
        return max(self.unavailable.values())

    @property
    def valid(self) -> bool:
        return not (any(self.lost.values()) or any(self.duplicates.values())
                    or any(self.disorder.values()) or self.conflicts
                    or self.view_complete == float("inf"))


def check(members: dict[str, Member], writers: list[Writer], started: float) -> Verdict:
    acks = [ack for writer in writers for ack in writer.acks]
    lost, duplicates, disorder = {}, {}, {}
    for name, member in members.items():
        told = max(member.reports, default=float("-inf"))
        delivered = member.delivered()
        lost[name] = [text for text, when in acks if text not in delivered and when > told]
        counts = Counter(text for _, _, text in member.deliveries)
        duplicates[name] = [text for text, count in counts.items() if count > 1]
        disorder[name] = sum(1 for (e1, s1, _), (e2, s2, _) in
                             zip(member.deliveries, member.deliveries[1:], strict=False)
                             if e1 == e2 and s2 <= s1)
    refusals: Counter[str] = Counter()
    for writer in writers:
        refusals.update(writer.refusals)
    reported = {name: len(member.reports) for name, member in members.items()}
    return Verdict(lost, duplicates, disorder, reported, len(acks),
                   {writer.name: round(writer.longest_wait(started), 1) for writer in writers},
                   refusals, _conflicts(members))


def _conflicts(members: dict[str, Member]) -> dict[tuple[str, int], set[str]]:
    """(epoch, seq) that name more than one text among all the members' deliveries."""
    named: dict[tuple[str, int], set[str]] = {}
    for member in members.values():
        for epoch, seq, text in member.deliveries:
            named.setdefault((epoch, seq), set()).add(text)
    return {place: texts for place, texts in named.items() if len(texts) > 1}


async def quiesce(members: dict[str, Member], writers: list[Writer]) -> None:
    """Wait until every member holds every acknowledged text or was told of a loss after it,
    for at most QUIET_TIMEOUT."""
    deadline = time.monotonic() + QUIET_TIMEOUT
    while time.monotonic() < deadline:
        verdict = check(members, writers, 0.0)
        if not any(verdict.lost.values()):
            return
        await asyncio.sleep(0.2)


async def watch_views(members: dict[str, Member], everyone: set[str],
                      samples: list[tuple[float, list[str]]]) -> None:
    """Append to `samples` every VIEW_SAMPLE seconds, until cancelled: when, and whom each
    member list lacks ("m0 -w0": m0's list lacks w0). Names beyond `everyone` are a
    schedule's own lookers, not errors."""
    while True:
        wrong = []
        for name, member in members.items():
            if missing := everyone - set(member.client.members.values()):
                wrong.append(" ".join([name, *(f"-{gone}" for gone in sorted(missing))]))
        samples.append((time.monotonic(), wrong))
        await asyncio.sleep(VIEW_SAMPLE)


def view_complete(samples: list[tuple[float, list[str]]], faulted_at: float
                  ) -> tuple[float, list[str]]:
    """Seconds from the fault to the last wrong view after it, and how the views differed
    then: 0 when none was wrong, infinite when the last sample was still wrong."""
    after = [(when - faulted_at, wrong) for when, wrong in samples if when >= faulted_at and wrong]
    if not after:
        return 0.0, []
    if samples[-1][1]:
        return float("inf"), samples[-1][1]
    return round(after[-1][0], 1), after[-1][1]


async def run_workload(member_urls: dict[str, str], writer_urls: list[str], room: str,
                       fault: Callable[[], Awaitable[float]], interval: float = 0.05,
                       heartbeat: float = HEARTBEAT) -> Verdict:
    """Members join, writers write while `fault()` plays its schedule (returning when its
    fault began), then the writers stop, members catch up, and the checker rules. Every
    client pings every `heartbeat` seconds."""
    members = {name: Member(ChatClient(url, name, room, heartbeat=heartbeat))
               for name, url in member_urls.items()}
    writers = [Writer(ChatClient(url, f"w{n}", room, heartbeat=heartbeat), f"w{n}")
               for n, url in enumerate(writer_urls)]
    recorders: list[asyncio.Task[None]] = []
    try:
        for member in members.values():
            await member.client.start()
            recorders.append(asyncio.create_task(member.record()))
        for writer in writers:
            await writer.client.start()
        stop, started = asyncio.Event(), time.monotonic()
        samples: list[tuple[float, list[str]]] = []
        recorders.append(asyncio.create_task(
            watch_views(members, {*members, *(writer.name for writer in writers)}, samples)))
        writing = [asyncio.create_task(w.write(stop, interval)) for w in writers]
        try:
            faulted_at = await fault()
        finally:
            stop.set()
            await asyncio.gather(*writing)
        await quiesce(members, writers)
        complete, last_wrong = view_complete(samples, faulted_at)
        return replace(check(members, writers, started), view_complete=complete,
                       last_wrong_views=last_wrong)
    finally:
        for client in [*(m.client for m in members.values()), *(w.client for w in writers)]:
            await client.close()
        for recorder in recorders:
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
