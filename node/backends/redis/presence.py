"""Presence in Redis: members held by nodes, and announced by the same scripts.

Every membership change of a room is one script on the room's keys that also publishes its
announcement on the room's channel, numbered by the room's presence version: the member
list, who holds whom and what members were told always agree. The room's keys share a hash
slot, so in a Redis Cluster that script runs on the room's shard. What spans rooms (which
members each node holds, the room directory, display names, liveness) is in cluster-wide
keys of one slot, changed by scripts of their own.

Any live node that finds another node's liveness key gone (node.backends.redis.coordination) claims
that node's members (only one claimant wins, for a while) and releases them room by room.
Releasing is idempotent, so a claimant that dies midway leaves the rest to the next one.
Nobody trusts a dead node to clean up after itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from node.backends import envelope
from node.backends.errors import Unavailable
from node.backends.presence import (
    Announcements, Departure, HeldName, Joined, Member, RoomCount, RoomLimit, RoomPage,
    RoomPolicy, Roster, creation_refusal,
)
from node.backends.redis.event_queue import Marks
from node.backends.redis.lua import lua_script
from node.backends.redis.script_pipeline import ScriptPipeline
from node.backends.redis.support import (
    Client, RedisKeys, members, publish_command, translate_errors,
)

log = logging.getLogger("node.backends.presence")

# A room's scripts: KEYS[1] is one of the room's keys (a Redis Cluster routes the call to the
# room's shard by it); ARGV[1] is the key prefix, ARGV[2] the publish command
# (node.backends.redis.support.publish_command), ARGV[3] the room, ARGV[4] the most members a roster
# lists. Key names as `RedisKeys` gives them (tests/integration/test_presence_keys.py holds
# the two together).

# ARGV[5...]: member id, member info, node, the member's user_joined and user_left templates
# (fragments joined by NUL), the session not to tell, fixed (1/0). Returns {1 new / 0 not,
# presence version, count, member infos...}.
JOIN_ROOM = lua_script("join_room", "envelope", "room")

# Returns the presence version, the count, then the member infos (see `roster`).
ROSTER = lua_script("roster", "envelope", "room")

# ARGV[5...]: node, room ttl (ms), fixed, the number of members the node releases, their
# ids, then id, info, user_joined and user_left templates of every member it holds. For each
# release, returns the member's info ('' when unknown) and the room's count after it (-1:
# the member stays).
SETTLE_ROOM = lua_script("settle_room", "envelope", "room")

# The cluster-wide scripts: KEYS[1] is a cluster-wide key (one slot for all of them); ARGV[1]
# is the key prefix.

# ARGV: prefix, room, member id, node, fixed (1/0), max created rooms, then the user's and
# its address's creation budgets: key, limit and window (ms) each. Returns 0 when the node
# may hold the member in the room (it is in the directory and the node's list now), -1 when
# the cluster has its maximum of rooms, -2 when the user created its share, -3 when its
# address did.
ENTER = lua_script("enter", "budget", "shared")

# ARGV: prefix, node, room ttl (ms), then (room, member id, emptied) triples.
FORGET = lua_script("forget", "budget", "shared")

# ARGV: prefix, the dead node, this node, settling time (ms). Returns 1 when this node is the
# one to release what the dead node held (it holds the node's settling for that time), else 0.
CLAIM_DEAD = lua_script("claim_dead", "budget", "shared")

# ARGV: prefix, the dead node, this node, settling time (ms), page. Frees up to a page of the
# dead node's names and renews the settling; returns how many remain, or -1 when the settling
# is not this node's any more. The names go before the members are announced gone, so that
# who hears them leave may take their names (a node that comes back holds its names again,
# unless somebody took them meanwhile).
DEAD_NAMES = lua_script("dead_names", "budget", "shared")

# ARGV: prefix, the dead node, this node, settling time (ms), cursor, page. Renews the
# settling and returns 1, the next cursor and about a page of the "room NUL member id" fields
# the dead node held (HSCAN from the cursor); 0 alone when the settling is not this node's
# any more.
DEAD_MEMBERS = lua_script("dead_members", "budget", "shared")

# ARGV: prefix, the dead node, this node. Its members released (FORGET), the node goes,
# unless it came back meanwhile.
BURY = lua_script("bury", "budget", "shared")

# ARGV: prefix, node, user id, the name's forms. Returns the owner of a form another user
# holds (nothing is held then), or '' when the user now holds every form once more.
CLAIM_NAME = lua_script("claim_name", "budget", "shared")

# ARGV: prefix, node, the name's forms: one of the node's connections let the name go.
RELEASE_NAME = lua_script("release_name", "budget", "shared")

# ARGV: prefix, node, settling time (ms), the number of fixed rooms, the fixed rooms, the
# number of held name forms, then form, user id, connections for each, then room, member id,
# fixed for every member the node holds. The node's names become exactly those (a name
# another user took meanwhile stays theirs), its list of members exactly those, and the
# directory has their rooms. Returns {-1} while a reaper settles the node, else {0} and the
# "room NUL member id" fields it no longer holds (for SETTLE_ROOM). Until RESYNCED, the
# node is settling: no reaper releases what it writes back.
RESYNC = lua_script("resync", "budget", "shared")

# ARGV: prefix, node, liveness ttl (ms), room ttl (ms), then the (room, member id, emptied)
# triples the resync released: the node is alive again and settled.
RESYNCED = lua_script("resynced", "budget", "shared")

# ARGV: prefix, offset, limit. Returns the number of rooms, then the page's names.
LIST_ROOMS = lua_script("list_rooms", "budget", "shared")

# ARGV: prefix, fixed rooms...
REGISTER_FIXED = lua_script("register_fixed", "budget", "shared")

# How long one node may take to settle another's presence (or its own) before a second one
# may: far longer than any settle takes, short enough that a crashed settler holds no one up.
SETTLE_MS = 30_000

# A dead node's names and members released per script: Redis runs nothing else while a script
# runs, and one script for all 13,000 of a node's held 120 ms, every node's publishes and
# joins waiting behind it (docs/performance-history.md, *A dead node released a page at a
# time, and shorter full collections*).
REAP_PAGE = 500


class _MemberInfo(msgspec.Struct, array_like=True):
    id: str
    name: str


_encode = msgspec.json.Encoder().encode
_decode: Callable[[bytes], _MemberInfo] = msgspec.json.Decoder(_MemberInfo).decode


def _member(info: bytes) -> Member:
    decoded = _decode(info)
    return Member(decoded.id, decoded.name)


def _roster(reply: list[bytes]) -> Roster:
    version, count, *infos = reply
    return Roster([_member(info) for info in infos], int(version), int(count))


def _info(member: Member) -> bytes:
    return _encode(_MemberInfo(member.id, member.name))


def _by_room(fields: list[bytes]) -> dict[str, list[str]]:
    """"room NUL member id" fields, as member ids by room."""
    rooms: dict[str, list[str]] = {}
    for field in fields:
        room, member_id = field.decode().split("\0", 1)
        rooms.setdefault(room, []).append(member_id)
    return rooms


class RedisPresence:
    """Room membership across the cluster, in Redis hashes.

    Each room's membership is in the room's keys and changes by scripts on them (one shard of
    a Redis Cluster); which members each node holds, the directory and the names are
    cluster-wide keys, changed by scripts of their own. A join enters the directory first
    (where the room limits are) and then the room; a leave leaves the room first. A node that
    dies between the two leaves a member in its list that the room does not have: releasing
    it later does nothing.
    """

    def __init__(self, redis: Client, prefix: str, node_id: str, ttl: float,
                 policy: RoomPolicy, announcements: Announcements, marks: Marks | None = None
                 ) -> None:
        self._redis = redis  # the node's, shared with its broker
        self._marks = marks  # the webhooks' queue's, when it takes membership changes
        self._keys = RedisKeys(prefix)
        self._publish = publish_command(redis)
        self._node_id = node_id
        self._ttl_ms = int(ttl * 1000)
        self._policy = policy
        self._announcements = announcements
        self._room_ttl_ms = int(policy.ttl * 1000)
        self._scripts = {name: self._redis.register_script(source) for name, source in (
            ("join_room", JOIN_ROOM), ("roster", ROSTER), ("settle_room", SETTLE_ROOM),
            ("enter", ENTER), ("forget", FORGET), ("claim_dead", CLAIM_DEAD),
            ("dead_names", DEAD_NAMES), ("dead_members", DEAD_MEMBERS), ("bury", BURY),
            ("claim_name", CLAIM_NAME), ("release_name", RELEASE_NAME), ("resync", RESYNC),
            ("resynced", RESYNCED), ("list_rooms", LIST_ROOMS),
            ("register_fixed", REGISTER_FIXED))}
        self._pipeline = ScriptPipeline(self._redis, list(self._scripts.values()))

    async def start(self) -> None:
        """Register the fixed rooms; a Redis that is down now gets them at the first resync
        (which a node's first heartbeat always triggers)."""
        try:
            await self._register_fixed_rooms()
        except Unavailable as exc:
            log.warning("fixed rooms not registered yet: %s", exc)

    @translate_errors
    async def _register_fixed_rooms(self) -> None:
        await self._shared("register_fixed", *self._policy.fixed)

    async def close(self) -> None:
        await self._pipeline.close()

    async def _room(self, script: str, room: str, *args: object, announces: bool = False
                    ) -> Any:
        """Run a script of the room's (on the room's shard); one that `announces` a change
        also queues it for the webhooks when they want membership changes."""
        queued = announces and self._marks is not None and await self._marks.queues(
            room, self._marks.recorded.presence)
        return await self._pipeline.run(
            self._scripts[script],
            [self._keys.members(room), *([self._keys.hooks(room)] if queued else [])],
            [self._keys.prefix, self._publish, room, self._policy.listed, *args])

    async def _shared(self, script: str, *args: object) -> Any:
        """Run a script over cluster-wide keys."""
        return await self._pipeline.run(self._scripts[script], [self._keys.nodes],
                                        [self._keys.prefix, *args])

    def _templates(self, room: str, member: Member) -> list[bytes]:
        """The member's announcements in the room, as the scripts store them."""
        return [envelope.joined(t) for t in self._announcements(room, member)]

    def _fixed(self, room: str) -> str:
        return "1" if room in self._policy.fixed else "0"

    @translate_errors
    async def join(self, room: str, member: Member, exclude: str, address: str) -> Joined:
        policy = self._policy
        budgets = [argument for budget in policy.creations(member.id, address)
                   for argument in (self._keys.budget(budget.bucket), budget.limit,
                                    int(budget.window * 1000))]
        entered = await self._shared(
            "enter", room, member.id, self._node_id, self._fixed(room), policy.max_rooms,
            *budgets)
        if entered < 0:
            raise RoomLimit("the cluster has its maximum of rooms" if entered == -1
                            else creation_refusal(-entered - 2))
        added, *roster = await self._room(
            "join_room", room, member.id, _info(member), self._node_id,
            *self._templates(room, member), exclude, self._fixed(room), announces=True)
        return Joined(_roster(roster), bool(added))

    async def _release(self, node: str, room: str, member_ids: list[str],
                       holds: list[object] | None = None
                       ) -> tuple[list[Departure], list[object]]:
        """Release members a node held in a room (and have it hold `holds`, SETTLE_ROOM's
        form): who left the room, and what the directory is to forget ((room, member id,
        emptied) for each released)."""
        reply = await self._room("settle_room", room, node, self._room_ttl_ms,
                                 self._fixed(room), len(member_ids), *member_ids,
                                 *(holds or ()), announces=True)
        departures: list[Departure] = []
        forget: list[object] = []
        for member_id, info, count in zip(member_ids, reply[::2], reply[1::2], strict=True):
            if count >= 0 and info:
                departures.append(Departure(room, _member(info)))
            forget += [room, member_id, "1" if count == 0 else "0"]
        return departures, forget

    @translate_errors
    async def leave(self, room: str, member: Member) -> bool:
        departures, forget = await self._release(self._node_id, room, [member.id])
        await self._forget(self._node_id, forget)
        return bool(departures)

    @translate_errors
    async def roster(self, room: str) -> Roster:
        return _roster(await self._room("roster", room))

    @translate_errors
    async def room_exists(self, room: str) -> bool:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zscore(self._keys.room_names, room)
            pipe.zscore(self._keys.room_expiry, room)
            listed, expires = await pipe.execute()
        return listed is not None and (expires is None or expires > time.time() * 1000)

    @translate_errors
    async def rooms(self, offset: int, limit: int) -> RoomPage:
        total, *names = await self._shared("list_rooms", offset, limit)
        rooms = [name.decode() for name in names]
        async with self._redis.pipeline() as pipe:
            for room in rooms:
                pipe.hlen(self._keys.members(room))
            counts = await pipe.execute()
        return RoomPage([RoomCount(room, int(count)) for room, count in zip(rooms, counts)],
                        int(total))

    @translate_errors
    async def reap(self) -> list[Departure]:
        nodes = [n.decode() for n in await members(self._redis, self._keys.nodes)]
        departures: list[Departure] = []
        for node in nodes:
            if node != self._node_id:
                departures += await self._reap_node(node)
        return departures

    async def _reap_node(self, node: str) -> list[Departure]:
        """Release a dead node's names, then its members, when this node is the one to (see
        CLAIM_DEAD); no script takes more than a page of them. Stops where another node
        took the settling over (this one stalled past it)."""
        if not await self._shared("claim_dead", node, self._node_id, SETTLE_MS):
            return []
        while (names := await self._shared("dead_names", node, self._node_id, SETTLE_MS,
                                            REAP_PAGE)) > 0:
            pass
        fields = await self._dead_members(node) if names == 0 else None
        if fields is None:
            return []
        departures: list[Departure] = []
        forget: list[object] = []
        for room, member_ids in _by_room(fields).items():
            for first in range(0, len(member_ids), REAP_PAGE):
                left, forgotten = await self._release(node, room,
                                                      member_ids[first:first + REAP_PAGE])
                departures += left
                if len(forget) + len(forgotten) > 3 * REAP_PAGE:  # a triple each
                    await self._forget(node, forget)
                    forget = []
                forget += forgotten
        await self._forget(node, forget)
        await self._shared("bury", node, self._node_id)
        return departures

    async def _dead_members(self, node: str) -> list[bytes] | None:
        """The "room NUL member id" fields a dead node held, read a page at a time (so that
        its members can be released room by room); None when the settling was lost."""
        fields: list[bytes] = []
        cursor: bytes = b"0"
        while True:
            ours, *page = await self._shared("dead_members", node, self._node_id, SETTLE_MS,
                                             cursor, REAP_PAGE)
            if not ours:
                return None
            cursor, *more = page
            fields += more
            if cursor == b"0":
                return list(dict.fromkeys(fields))  # a scan may return a field twice

    async def _forget(self, node: str, forget: list[object]) -> None:
        if forget:
            await self._shared("forget", node, self._room_ttl_ms, *forget)

    @translate_errors
    async def claim_name(self, forms: tuple[str, ...], user_id: str) -> str | None:
        owner = await self._shared("claim_name", self._node_id, user_id, *forms)
        return owner.decode() if owner else None

    @translate_errors
    async def release_name(self, forms: tuple[str, ...]) -> None:
        await self._shared("release_name", self._node_id, *forms)

    @translate_errors
    async def resync(self, held: list[tuple[str, Member]], names: list[HeldName]) -> None:
        fixed = self._policy.fixed
        args: list[object] = [self._node_id, SETTLE_MS, len(fixed), *fixed, len(names)]
        for name in names:
            args += [name.form, name.user_id, name.connections]
        for room, member in held:
            args += [room, member.id, self._fixed(room)]
        stale = await self._resync_shared(*args)
        holds: dict[str, list[object]] = {}
        for room, member in held:
            holds.setdefault(room, []).extend(
                [member.id, _info(member), *self._templates(room, member)])
        releases = _by_room(stale)
        forget: list[object] = []
        for room in holds.keys() | releases.keys():
            _, forgotten = await self._release(self._node_id, room, releases.get(room, []),
                                               holds.get(room))
            forget += forgotten
        await self._shared("resynced", self._node_id, self._ttl_ms, self._room_ttl_ms,
                           *forget)

    async def _resync_shared(self, *args: object) -> list[bytes]:
        """Run RESYNC once no reaper settles this node any more (it releases what the node
        held while it looked dead; the resync then writes it all back)."""
        deadline = time.monotonic() + SETTLE_MS / 1000
        while True:
            first, *stale = await self._shared("resync", *args)
            if first >= 0:
                return stale
            if time.monotonic() > deadline:
                raise Unavailable("another node is still releasing this node's members")
            await asyncio.sleep(0.1)
