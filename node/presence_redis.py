"""Presence in Redis: members held by nodes, and announced by the same scripts.

Every membership change of a room is one script on the room's keys that also publishes its
announcement on the room's channel, numbered by the room's presence version: the member
list, who holds whom and what members were told always agree. The room's keys share a hash
slot, so in a Redis Cluster that script runs on the room's shard. What spans rooms (which
members each node holds, the room directory, display names, liveness) is in cluster-wide
keys of one slot, changed by scripts of their own.

Any live node that finds another node's liveness key gone (node.coordination_redis) claims
that node's members (only one claimant wins, for a while) and releases them room by room.
Releasing is idempotent, so a claimant that dies midway leaves the rest to the next one.
Nobody trusts a dead node to clean up after itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from node import envelope
from node.errors import Unavailable
from node.presence import (
    Announcements, Departure, HeldName, Joined, Member, RoomCount, RoomLimit, RoomPage,
    RoomPolicy, Roster, creation_refusal,
)
from node.redis_support import (
    LUA_BUDGET, Client, RedisKeys, publish_command, translate_errors,
)
from node.script_pipeline import ScriptPipeline

log = logging.getLogger("node.presence")

# A room's scripts: KEYS[1] is one of the room's keys (a Redis Cluster routes the call to the
# room's shard by it); ARGV[1] is the key prefix, ARGV[2] the publish command
# (node.redis_support.publish_command), ARGV[3] the room, ARGV[4] the most members a roster
# lists. Key names as `RedisKeys` gives them (tests/integration/test_presence_keys.py holds
# the two together).
ROOM_LUA = envelope.LUA + r"""
local P, PUBLISH, ROOM, LISTED = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local function key(kind) return P .. ':{' .. ROOM .. '}:' .. kind end
local MEMBERS, HOLDERS, HOLDS = key('members'), key('holders'), key('holds')
local FAREWELLS, VERSION = key('farewells'), key('presence')
local HISTORY_KEYS = {key('seq'), key('history'), key('epoch'), key('history-bytes'),
                      key('term'), key('parent'), VERSION}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The room's presence version. A lost counter (Redis restarted empty) starts again from the
-- time in ms, above every version it gave before unless the room changed more than once a
-- millisecond on average: members never take a new announcement for an old one.
local function version()
  local current = redis.call('GET', VERSION)
  if current then return tonumber(current) end
  local start = now_ms()
  redis.call('SET', VERSION, start)
  return start
end

-- `head`, then the room's presence version, its count and, unless there are more than
-- LISTED, every member's info: a large room's list is no use to anyone, and reading it at
-- every join would cost filling the room the square of its size. Appended one by one: Lua's
-- unpack() fails past about 8,000 values.
local function roster(head)
  table.insert(head, version())
  local count = redis.call('HLEN', MEMBERS)
  table.insert(head, count)
  if count > LISTED then return head end
  for _, info in ipairs(redis.call('HVALS', MEMBERS)) do table.insert(head, info) end
  return head
end

-- Publish a membership change on the room's channel, numbered by the next presence version.
local function announce(template, exclude)
  version()
  local v = redis.call('INCR', VERSION)
  local count = redis.call('HLEN', MEMBERS)
  local payload = close(split(template), {count, v})
  redis.call(PUBLISH, key('channel'), envelope(ROOM, 0, exclude, payload, v, ''))
end

-- A created room keeps its history while it has members; emptied, it expires after its time
-- to live (the directory forgets it then too). Fixed rooms keep theirs for good.
local function keep(fixed)
  if fixed == '1' then return end
  for _, k in ipairs(HISTORY_KEYS) do redis.call('PERSIST', k) end
end

-- The node holds the member in the room; returns 1 when the member is new to the room, and
-- then announces it (`hello`, unless empty) to everyone but `exclude`. `farewell` is kept
-- for its leaving.
local function hold(id, info, node, hello, farewell, exclude)
  if redis.call('HSETNX', HOLDERS, id .. '\0' .. node, 1) == 1 then
    redis.call('HINCRBY', HOLDS, id, 1)
  end
  redis.call('HSET', FAREWELLS, id, farewell)
  local added = redis.call('HSET', MEMBERS, id, info)
  if added == 1 and hello ~= '' then announce(hello, exclude) end
  return added
end

-- The node no longer holds the member; returns the room's count when the member left it,
-- -1 while another node still holds it (or this one never did). An emptied created room
-- starts its time to live.
local function release(id, node, ttl_ms, fixed)
  if redis.call('HDEL', HOLDERS, id .. '\0' .. node) == 0 then return -1 end
  if redis.call('HINCRBY', HOLDS, id, -1) > 0 then return -1 end
  redis.call('HDEL', HOLDS, id)
  redis.call('HDEL', MEMBERS, id)
  local farewell = redis.call('HGET', FAREWELLS, id)
  redis.call('HDEL', FAREWELLS, id)
  if farewell then announce(farewell, '') end
  local count = redis.call('HLEN', MEMBERS)
  if count == 0 and fixed ~= '1' then
    for _, k in ipairs(HISTORY_KEYS) do redis.call('PEXPIRE', k, ttl_ms) end
  end
  return count
end
"""

# ARGV[5...]: member id, member info, node, the member's user_joined and user_left templates
# (fragments joined by NUL), the session not to tell, fixed (1/0). Returns {1 new / 0 not,
# presence version, count, member infos...}.
JOIN_ROOM = ROOM_LUA + r"""
keep(ARGV[11])
return roster({hold(ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])})
"""

# Returns the presence version, the count, then the member infos (see `roster`).
ROSTER = ROOM_LUA + r"""
return roster({})
"""

# ARGV[5...]: node, room ttl (ms), fixed, the number of members the node releases, their
# ids, then id, info, user_joined and user_left templates of every member it holds. For each
# release, returns the member's info ('' when unknown) and the room's count after it (-1:
# the member stays).
SETTLE_ROOM = ROOM_LUA + r"""
local node, ttl_ms, fixed = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local holds_from = 9 + tonumber(ARGV[8])
local released = {}
for i = 9, holds_from - 1 do
  table.insert(released, redis.call('HGET', MEMBERS, ARGV[i]) or '')
  table.insert(released, release(ARGV[i], node, ttl_ms, fixed))
end
if holds_from <= #ARGV then keep(fixed) end
-- Members reaped while the node's liveness lapsed come back announced. After Redis lost
-- everything (no presence version left) nobody is: members never saw them go, and a room of
-- thousands would get thousands of announcements.
local announced = redis.call('EXISTS', VERSION) == 1
for j = holds_from, #ARGV, 4 do
  hold(ARGV[j], ARGV[j + 1], node, announced and ARGV[j + 2] or '', ARGV[j + 3], '')
end
return released
"""

# The cluster-wide scripts: KEYS[1] is a cluster-wide key (one slot for all of them); ARGV[1]
# is the key prefix.
SHARED_LUA = LUA_BUDGET + r"""
local P = ARGV[1]
local function shared(kind) return P .. ':{@cluster}:' .. kind end
local ROOMS, CREATED, NODES = shared('rooms'), shared('rooms-created'), shared('nodes')
local function node_members(node) return shared('node-members:' .. node) end
local function settling(node) return shared('settling:' .. node) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop created rooms whose time is up from the directory (their keys expire by TTL).
local function prune(now)
  local gone = redis.call('ZRANGEBYSCORE', CREATED, '-inf', now, 'LIMIT', 0, 100)
  if #gone > 0 then
    redis.call('ZREM', CREATED, unpack(gone))
    redis.call('ZREM', ROOMS, unpack(gone))
  end
end

-- Put a room in the directory for good (fixed) or while it has members (created).
local function register(room, fixed)
  redis.call('ZADD', ROOMS, 0, room)
  if fixed ~= '1' then redis.call('ZADD', CREATED, '+inf', room) end
end

-- Members the node no longer holds: (room, id, emptied) triples from ARGV[first]. A room
-- that emptied starts its time to live in the directory (its keys have theirs).
local function forget(node, ttl_ms, first)
  for i = first, #ARGV, 3 do
    redis.call('HDEL', node_members(node), ARGV[i] .. '\0' .. ARGV[i + 1])
    if ARGV[i + 2] == '1' and redis.call('ZSCORE', CREATED, ARGV[i]) then
      redis.call('ZADD', CREATED, now_ms() + ttl_ms, ARGV[i])
    end
  end
end

-- Display names: each canonical form of a name is a hash of its owner (the user holding it)
-- and, per node, how many of that node's connections hold it.
local function name_key(form) return shared('name:' .. form) end
local function node_names(node) return shared('node-names:' .. node) end
local OWNER = '\0owner'  -- no node id starts with NUL

local function hold_name(form, id, node, count)
  redis.call('HSET', name_key(form), OWNER, id)
  redis.call('HINCRBY', name_key(form), node, count)
  redis.call('SADD', node_names(node), form)
end

-- The node's holds of the form go; the last hold gone frees the name.
local function drop_name(form, node)
  redis.call('HDEL', name_key(form), node)
  redis.call('SREM', node_names(node), form)
  if redis.call('HLEN', name_key(form)) <= 1 then redis.call('DEL', name_key(form)) end
end

local function drop_node_names(node)
  for _, form in ipairs(redis.call('SMEMBERS', node_names(node))) do drop_name(form, node) end
end
"""

# ARGV: prefix, room, member id, node, fixed (1/0), max created rooms, then the user's and
# its address's creation budgets: key, limit and window (ms) each. Returns 0 when the node
# may hold the member in the room (it is in the directory and the node's list now), -1 when
# the cluster has its maximum of rooms, -2 when the user created its share, -3 when its
# address did.
ENTER = SHARED_LUA + r"""
local room, id, node, fixed = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
prune(now_ms())
if fixed ~= '1' and not redis.call('ZSCORE', CREATED, room) then
  if redis.call('ZCARD', CREATED) >= tonumber(ARGV[6]) then return -1 end
  local spent = take({ARGV[7], ARGV[10]}, {tonumber(ARGV[8]), tonumber(ARGV[11])},
                     {ARGV[9], ARGV[12]}, {1, 1})
  if spent > 0 then return -1 - spent end
end
register(room, fixed)
redis.call('SADD', NODES, node)
redis.call('HSET', node_members(node), room .. '\0' .. id, 1)
return 0
"""

# ARGV: prefix, node, room ttl (ms), then (room, member id, emptied) triples.
FORGET = SHARED_LUA + r"""
forget(ARGV[2], tonumber(ARGV[3]), 4)
return 1
"""

# ARGV: prefix, the dead node, this node, settling time (ms). Returns the "room NUL member id"
# fields the dead node held, when this node is the one to release them; else nothing. The
# dead node's names are free from here: before its members are announced gone, so that who
# hears them leave may take their names (a node that comes back holds its names again,
# unless somebody took them meanwhile).
CLAIM_DEAD = SHARED_LUA + r"""
local node = ARGV[2]
if redis.call('EXISTS', shared('alive:' .. node)) == 1 then return {} end
if redis.call('SISMEMBER', NODES, node) == 0 then return {} end
if not redis.call('SET', settling(node), ARGV[3], 'NX', 'PX', ARGV[4]) then return {} end
drop_node_names(node)
return redis.call('HKEYS', node_members(node))
"""

# ARGV: prefix, the dead node, this node. Its members released (FORGET), the node goes,
# unless it came back meanwhile.
BURY = SHARED_LUA + r"""
local node = ARGV[2]
if redis.call('GET', settling(node)) ~= ARGV[3] then return 0 end
redis.call('DEL', settling(node))
if redis.call('EXISTS', shared('alive:' .. node)) == 1 then return 0 end
if redis.call('HLEN', node_members(node)) > 0 then return 0 end
redis.call('SREM', NODES, node)
return 1
"""

# ARGV: prefix, node, user id, the name's forms. Returns the owner of a form another user
# holds (nothing is held then), or '' when the user now holds every form once more.
CLAIM_NAME = SHARED_LUA + r"""
local node, id = ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local owner = redis.call('HGET', name_key(ARGV[i]), OWNER)
  if owner and owner ~= id then return owner end
end
for i = 4, #ARGV do hold_name(ARGV[i], id, node, 1) end
return ''
"""

# ARGV: prefix, node, the name's forms: one of the node's connections let the name go.
RELEASE_NAME = SHARED_LUA + r"""
local node = ARGV[2]
for i = 3, #ARGV do
  if redis.call('HINCRBY', name_key(ARGV[i]), node, -1) <= 0 then drop_name(ARGV[i], node) end
end
return 1
"""

# ARGV: prefix, node, settling time (ms), the number of fixed rooms, the fixed rooms, the
# number of held name forms, then form, user id, connections for each, then room, member id,
# fixed for every member the node holds. The node's names become exactly those (a name
# another user took meanwhile stays theirs), its list of members exactly those, and the
# directory has their rooms. Returns {-1} while a reaper settles the node, else {0} and the
# "room NUL member id" fields it no longer holds (for SETTLE_ROOM). Until RESYNCED, the
# node is settling: no reaper releases what it writes back.
RESYNC = SHARED_LUA + r"""
local node = ARGV[2]
local holder = redis.call('GET', settling(node))
if holder and holder ~= node then return {-1} end
redis.call('SET', settling(node), node, 'PX', ARGV[3])
local names_at = 5 + tonumber(ARGV[4])
for i = 5, names_at - 1 do register(ARGV[i], '1') end
local held_from = names_at + 1 + 3 * tonumber(ARGV[names_at])
drop_node_names(node)
for i = names_at + 1, held_from - 1, 3 do
  local owner = redis.call('HGET', name_key(ARGV[i]), OWNER)
  if not owner or owner == ARGV[i + 1] then
    hold_name(ARGV[i], ARGV[i + 1], node, tonumber(ARGV[i + 2]))
  end
end
local wanted = {}
for i = held_from, #ARGV, 3 do
  wanted[ARGV[i] .. '\0' .. ARGV[i + 1]] = true
  register(ARGV[i], ARGV[i + 2])
end
local stale = {0}
for _, field in ipairs(redis.call('HKEYS', node_members(node))) do
  if not wanted[field] then table.insert(stale, field) end
end
for field in pairs(wanted) do redis.call('HSET', node_members(node), field, 1) end
redis.call('SADD', NODES, node)
return stale
"""

# ARGV: prefix, node, liveness ttl (ms), room ttl (ms), then the (room, member id, emptied)
# triples the resync released: the node is alive again and settled.
RESYNCED = SHARED_LUA + r"""
local node = ARGV[2]
forget(node, tonumber(ARGV[4]), 5)
redis.call('SET', shared('alive:' .. node), 1, 'PX', ARGV[3])
if redis.call('GET', settling(node)) == node then redis.call('DEL', settling(node)) end
return 1
"""

# ARGV: prefix, offset, limit. Returns the number of rooms, then the page's names.
LIST_ROOMS = SHARED_LUA + r"""
prune(now_ms())
local first = tonumber(ARGV[2])
local page = {redis.call('ZCARD', ROOMS)}
for _, name in ipairs(redis.call('ZRANGE', ROOMS, first, first + tonumber(ARGV[3]) - 1)) do
  table.insert(page, name)
end
return page
"""

# ARGV: prefix, fixed rooms...
REGISTER_FIXED = SHARED_LUA + r"""
for i = 2, #ARGV do
  redis.call('ZREM', CREATED, ARGV[i])
  register(ARGV[i], '1')
end
return 1
"""

# How long one node may take to settle another's presence (or its own) before a second one
# may: far longer than any settle takes, short enough that a crashed settler holds no one up.
SETTLE_MS = 30_000


class _MemberInfo(msgspec.Struct, array_like=True):
    id: str
    name: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_MemberInfo).decode


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
                 policy: RoomPolicy, announcements: Announcements) -> None:
        self._redis = redis  # the node's, shared with its broker
        self._keys = RedisKeys(prefix)
        self._publish = publish_command(redis)
        self._node_id = node_id
        self._ttl_ms = int(ttl * 1000)
        self._policy = policy
        self._announcements = announcements
        self._room_ttl_ms = int(policy.ttl * 1000)
        self._scripts = {name: self._redis.register_script(source) for name, source in (
            ("join_room", JOIN_ROOM), ("roster", ROSTER), ("settle_room", SETTLE_ROOM),
            ("enter", ENTER), ("forget", FORGET), ("claim_dead", CLAIM_DEAD), ("bury", BURY),
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

    async def _room(self, script: str, room: str, *args: object) -> Any:
        """Run a script of the room's (on the room's shard)."""
        return await self._pipeline.run(
            self._scripts[script], [self._keys.members(room)],
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
            *self._templates(room, member), exclude, self._fixed(room))
        return Joined(_roster(roster), bool(added))

    async def _release(self, node: str, room: str, member_ids: list[str],
                       holds: list[object] | None = None
                       ) -> tuple[list[Departure], list[object]]:
        """Release members a node held in a room (and have it hold `holds`, SETTLE_ROOM's
        form): who left the room, and what the directory is to forget ((room, member id,
        emptied) for each released)."""
        reply = await self._room("settle_room", room, node, self._room_ttl_ms,
                                 self._fixed(room), len(member_ids), *member_ids,
                                 *(holds or ()))
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
        await self._shared("forget", self._node_id, self._room_ttl_ms, *forget)
        return bool(departures)

    @translate_errors
    async def roster(self, room: str) -> Roster:
        return _roster(await self._room("roster", room))

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
        nodes = [n.decode() for n in await self._redis.smembers(self._keys.nodes)]
        departures: list[Departure] = []
        for node in nodes:
            if node != self._node_id:
                departures += await self._reap_node(node)
        return departures

    async def _reap_node(self, node: str) -> list[Departure]:
        """Release a dead node's members, when this node is the one to (see CLAIM_DEAD)."""
        fields = await self._shared("claim_dead", node, self._node_id, SETTLE_MS)
        departures: list[Departure] = []
        forget: list[object] = []
        for room, member_ids in _by_room(fields).items():
            left, forgotten = await self._release(node, room, member_ids)
            departures += left
            forget += forgotten
        await self._shared("forget", node, self._room_ttl_ms, *forget)
        await self._shared("bury", node, self._node_id)
        return departures

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
