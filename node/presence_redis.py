"""Presence in Redis: members held by nodes, and announced by the same scripts.

Every membership change is one script that also publishes its announcement on the room's
channel, numbered by the room's presence version: the member list, who holds whom, the room
directory and what members were told always agree. Any live node that finds another node's
liveness key gone (node.coordination_redis) releases that node's members in one atomic
script (only one reaper wins). Nobody trusts a dead node to clean up after itself.
"""

from __future__ import annotations

import logging
import time

import msgspec

from node import envelope
from node.errors import Unavailable
from node.presence import (
    Announcements, Departure, HeldName, Joined, Member, RoomCount, RoomLimit, RoomPage,
    RoomPolicy, Roster,
)
from node.redis_support import LUA_BUDGET, RedisKeys, connect, translate_errors

log = logging.getLogger("node.presence")

# Shared by the scripts below. ARGV[1] is the key prefix; the key names are those of
# `RedisKeys` (tests/integration/test_presence_keys.py holds the two together).
ROOMS_LUA = LUA_BUDGET + envelope.LUA + r"""
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function members(room) return P .. ':members:' .. room end
local function holders(room) return P .. ':holders:' .. room end
local function holds(room) return P .. ':holds:' .. room end
local function farewells(room) return P .. ':farewells:' .. room end
local function presence_version(room) return P .. ':presence:' .. room end
local function node_members(node) return P .. ':node-members:' .. node end
local function history_keys(room)
  return {P .. ':seq:' .. room, P .. ':history:' .. room, P .. ':epoch:' .. room,
          presence_version(room)}
end

-- The room's presence version. A lost counter (Redis restarted empty) starts again from the
-- time in ms, above every version it gave before unless the room changed more than once a
-- millisecond on average: members never take a new announcement for an old one.
local function version(room)
  local current = redis.call('GET', presence_version(room))
  if current then return tonumber(current) end
  local start = now_ms()
  redis.call('SET', presence_version(room), start)
  return start
end

-- `head`, then the room's presence version and every member's info. Appended one by one:
-- Lua's unpack() fails past about 8,000 values, and rooms may be larger.
local function roster(room, head)
  table.insert(head, version(room))
  for _, info in ipairs(redis.call('HVALS', members(room))) do table.insert(head, info) end
  return head
end

-- Publish a membership change on the room's channel, numbered by the next presence version.
local function announce(room, template, exclude)
  version(room)
  local v = redis.call('INCR', presence_version(room))
  local count = redis.call('HLEN', members(room))
  local payload = close(split(template), {count, v})
  redis.call('PUBLISH', P .. ':room:' .. room, envelope(room, 0, exclude, payload, v))
end

-- Drop created rooms whose time is up from the directory (their keys expire by TTL).
local function prune(now)
  local gone = redis.call('ZRANGEBYSCORE', P .. ':rooms-created', '-inf', now, 'LIMIT', 0, 100)
  if #gone > 0 then
    redis.call('ZREM', P .. ':rooms-created', unpack(gone))
    redis.call('ZREM', P .. ':rooms', unpack(gone))
  end
end

-- Put a room in the directory for good (fixed) or while it has members (created).
local function register(room, fixed)
  redis.call('ZADD', P .. ':rooms', 0, room)
  if fixed == '1' then return end
  redis.call('ZADD', P .. ':rooms-created', '+inf', room)
  for _, key in ipairs(history_keys(room)) do redis.call('PERSIST', key) end
end

-- The node holds the member in the room; returns 1 when the member is new to the room, and
-- then announces it (`hello`, unless empty) to everyone but `exclude`. `farewell` is kept
-- for its leaving.
local function hold(room, id, info, node, hello, farewell, exclude)
  if redis.call('HSETNX', holders(room), id .. '\0' .. node, 1) == 1 then
    redis.call('HINCRBY', holds(room), id, 1)
  end
  redis.call('HSET', node_members(node), room .. '\0' .. id, 1)
  redis.call('HSET', farewells(room), id, farewell)
  local added = redis.call('HSET', members(room), id, info)
  if added == 1 and hello ~= '' then announce(room, hello, exclude) end
  return added
end

-- The node no longer holds the member; returns the room's count when the member left it,
-- -1 while another node still holds it (or this one never did). An emptied created room
-- starts its time to live.
local function release(room, id, node, ttl_ms)
  redis.call('HDEL', node_members(node), room .. '\0' .. id)
  if redis.call('HDEL', holders(room), id .. '\0' .. node) == 0 then return -1 end
  if redis.call('HINCRBY', holds(room), id, -1) > 0 then return -1 end
  redis.call('HDEL', holds(room), id)
  redis.call('HDEL', members(room), id)
  local farewell = redis.call('HGET', farewells(room), id)
  redis.call('HDEL', farewells(room), id)
  if farewell then announce(room, farewell, '') end
  local count = redis.call('HLEN', members(room))
  if count == 0 and redis.call('ZSCORE', P .. ':rooms-created', room) then
    redis.call('ZADD', P .. ':rooms-created', now_ms() + ttl_ms, room)
    for _, key in ipairs(history_keys(room)) do redis.call('PEXPIRE', key, ttl_ms) end
  end
  return count
end

-- Display names: each canonical form of a name is a hash of its owner (the user holding it)
-- and, per node, how many of that node's connections hold it.
local function name_key(form) return P .. ':name:' .. form end
local function node_names(node) return P .. ':node-names:' .. node end
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

local function split(field)
  local at = string.find(field, '\0', 1, true)
  return string.sub(field, 1, at - 1), string.sub(field, at + 1)
end
"""

# ARGV: prefix, room, member id, member info, node, fixed (1/0), max created rooms, the
# user's creation budget key, its limit and window (ms), the member's user_joined and
# user_left templates (fragments joined by NUL), the session not to tell. Returns
# {1 new / 0 not, presence version, member infos...}, or {-1} when the cluster has its
# maximum of rooms, {-2} when the user created its share.
JOIN = ROOMS_LUA + r"""
local room, id, node = ARGV[2], ARGV[3], ARGV[5]
prune(now_ms())
if ARGV[6] ~= '1' and not redis.call('ZSCORE', P .. ':rooms-created', room) then
  if redis.call('ZCARD', P .. ':rooms-created') >= tonumber(ARGV[7]) then return {-1} end
  if take({ARGV[8]}, {tonumber(ARGV[9])}, {ARGV[10]}, {1}) > 0 then return {-2} end
end
register(room, ARGV[6])
redis.call('SADD', P .. ':nodes', node)
local added = hold(room, id, ARGV[4], node, ARGV[11], ARGV[12], ARGV[13])
return roster(room, {added})
"""

# ARGV: prefix, room. Returns the presence version, then every member's info.
ROSTER = ROOMS_LUA + r"""
return roster(ARGV[2], {})
"""

# ARGV: prefix, room, member id, node, room ttl (ms). Returns the count, or -1 (see release).
LEAVE = ROOMS_LUA + r"""
return release(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
"""

# ARGV: prefix, the dead node, room ttl (ms). Returns room, member info for every member that
# left (each announced by `release`).
REAP_NODE = ROOMS_LUA + r"""
local node = ARGV[2]
if redis.call('EXISTS', P .. ':alive:' .. node) == 1 then return {} end
if redis.call('SREM', P .. ':nodes', node) == 0 then return {} end
local departed = {}
for _, field in ipairs(redis.call('HKEYS', node_members(node))) do
  local room, id = split(field)
  local info = redis.call('HGET', members(room), id)
  local count = release(room, id, node, tonumber(ARGV[3]))
  if count >= 0 and info then
    table.insert(departed, room)
    table.insert(departed, info)
  end
end
redis.call('DEL', node_members(node))
drop_node_names(node)
return departed
"""

# ARGV: prefix, node, user id, the name's forms. Returns the owner of a form another user
# holds (nothing is held then), or '' when the user now holds every form once more.
CLAIM_NAME = ROOMS_LUA + r"""
local node, id = ARGV[2], ARGV[3]
for i = 4, #ARGV do
  local owner = redis.call('HGET', name_key(ARGV[i]), OWNER)
  if owner and owner ~= id then return owner end
end
for i = 4, #ARGV do hold_name(ARGV[i], id, node, 1) end
return ''
"""

# ARGV: prefix, node, the name's forms: one of the node's connections let the name go.
RELEASE_NAME = ROOMS_LUA + r"""
local node = ARGV[2]
for i = 3, #ARGV do
  if redis.call('HINCRBY', name_key(ARGV[i]), node, -1) <= 0 then drop_name(ARGV[i], node) end
end
return 1
"""

# ARGV: prefix, node, room ttl (ms), liveness ttl (ms), the number of fixed rooms, the fixed
# rooms, the number of held name forms, then form, user id, connections for each, then room,
# member id, info, fixed, user_joined and user_left templates for every member the node
# holds: the node's presence and names
# become exactly that (a name another user took meanwhile stays theirs), and the directory
# has the fixed rooms again.
RESYNC = ROOMS_LUA + r"""
local node = ARGV[2]
local names_at = 6 + tonumber(ARGV[5])
for i = 6, names_at - 1 do register(ARGV[i], '1') end
local held_from = names_at + 1 + 3 * tonumber(ARGV[names_at])
drop_node_names(node)
for i = names_at + 1, held_from - 1, 3 do
  local owner = redis.call('HGET', name_key(ARGV[i]), OWNER)
  if not owner or owner == ARGV[i + 1] then
    hold_name(ARGV[i], ARGV[i + 1], node, tonumber(ARGV[i + 2]))
  end
end
local wanted = {}
for i = held_from, #ARGV, 6 do wanted[ARGV[i] .. '\0' .. ARGV[i + 1]] = i end
for _, field in ipairs(redis.call('HKEYS', node_members(node))) do
  if not wanted[field] then
    local room, id = split(field)
    release(room, id, node, tonumber(ARGV[3]))
  end
end
for _, i in pairs(wanted) do
  register(ARGV[i], ARGV[i + 3])
  -- Members reaped while this node's liveness lapsed come back announced. After Redis lost
  -- everything (no presence version left) nobody is: members never saw them go, and a room
  -- of thousands would get thousands of announcements.
  local hello = ''
  if redis.call('EXISTS', presence_version(ARGV[i])) == 1 then hello = ARGV[i + 4] end
  hold(ARGV[i], ARGV[i + 1], ARGV[i + 2], node, hello, ARGV[i + 5], '')
end
redis.call('SADD', P .. ':nodes', node)
redis.call('SET', P .. ':alive:' .. node, 1, 'PX', ARGV[4])
return 1
"""

# ARGV: prefix, offset, limit. Returns the number of rooms, then name, count for the page.
LIST_ROOMS = ROOMS_LUA + r"""
prune(now_ms())
local first = tonumber(ARGV[2])
local names = redis.call('ZRANGE', P .. ':rooms', first, first + tonumber(ARGV[3]) - 1)
local page = {redis.call('ZCARD', P .. ':rooms')}
for _, name in ipairs(names) do
  table.insert(page, name)
  table.insert(page, redis.call('HLEN', members(name)))
end
return page
"""

# ARGV: prefix, fixed rooms...
REGISTER_FIXED = ROOMS_LUA + r"""
for i = 2, #ARGV do
  redis.call('ZREM', P .. ':rooms-created', ARGV[i])
  register(ARGV[i], '1')
end
return 1
"""


class _MemberInfo(msgspec.Struct, array_like=True):
    id: str
    name: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_MemberInfo).decode


def _member(info: bytes) -> Member:
    decoded = _decode(info)
    return Member(decoded.id, decoded.name)


def _roster(reply: list[bytes]) -> Roster:
    version, *infos = reply
    return Roster([_member(info) for info in infos], int(version))


def _info(member: Member) -> bytes:
    return _encode(_MemberInfo(member.id, member.name))


class RedisPresence:
    """Room membership across the cluster, in Redis hashes."""

    def __init__(self, url: str, prefix: str, node_id: str, ttl: float, policy: RoomPolicy,
                 announcements: Announcements) -> None:
        self._redis = connect(url)
        self._keys = RedisKeys(prefix)
        self._node_id = node_id
        self._ttl_ms = int(ttl * 1000)
        self._policy = policy
        self._announcements = announcements
        self._room_ttl_ms = int(policy.ttl * 1000)
        self._join = self._redis.register_script(JOIN)
        self._roster = self._redis.register_script(ROSTER)
        self._leave = self._redis.register_script(LEAVE)
        self._reap_node = self._redis.register_script(REAP_NODE)
        self._resync = self._redis.register_script(RESYNC)
        self._list_rooms = self._redis.register_script(LIST_ROOMS)
        self._register_fixed = self._redis.register_script(REGISTER_FIXED)
        self._claim_name = self._redis.register_script(CLAIM_NAME)
        self._release_name = self._redis.register_script(RELEASE_NAME)

    async def start(self) -> None:
        """Register the fixed rooms; a Redis that is down now gets them at the first resync
        (which a node's first heartbeat always triggers)."""
        try:
            await self._register_fixed_rooms()
        except Unavailable as exc:
            log.warning("fixed rooms not registered yet: %s", exc)

    @translate_errors
    async def _register_fixed_rooms(self) -> None:
        await self._call(self._register_fixed, *self._policy.fixed)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, script, *args: object) -> object:  # type: ignore[no-untyped-def]
        return await script(keys=[], args=[self._keys.prefix, *args])

    def _templates(self, room: str, member: Member) -> list[bytes]:
        """The member's announcements in the room, as the scripts store them."""
        return [envelope.joined(t) for t in self._announcements(room, member)]

    @translate_errors
    async def join(self, room: str, member: Member, exclude: str) -> Joined:
        policy = self._policy
        creations = policy.creations(member.id)
        reply = await self._call(
            self._join, room, member.id, _info(member), self._node_id,
            "1" if room in policy.fixed else "0", policy.max_rooms,
            self._keys.budget(creations.key(time.time())), creations.limit,
            int(creations.window * 1000), *self._templates(room, member), exclude)
        added, *roster = reply  # type: ignore[misc]
        if added < 0:
            raise RoomLimit("the cluster has its maximum of rooms" if added == -1
                            else "you have created too many rooms; join an existing one")
        return Joined(_roster(roster), bool(added))

    @translate_errors
    async def leave(self, room: str, member: Member) -> bool:
        count = await self._call(self._leave, room, member.id, self._node_id,
                                 self._room_ttl_ms)
        return int(count) >= 0  # type: ignore[call-overload]

    @translate_errors
    async def roster(self, room: str) -> Roster:
        return _roster(await self._call(self._roster, room))  # type: ignore[arg-type]

    @translate_errors
    async def rooms(self, offset: int, limit: int) -> RoomPage:
        total, *flat = await self._call(self._list_rooms, offset, limit)  # type: ignore[misc]
        rooms = [RoomCount(flat[i].decode(), int(flat[i + 1])) for i in range(0, len(flat), 2)]
        return RoomPage(rooms, int(total))

    @translate_errors
    async def reap(self) -> list[Departure]:
        nodes = [n.decode() for n in await self._redis.smembers(self._keys.nodes)]
        departures: list[Departure] = []
        for node in nodes:
            if node == self._node_id:
                continue
            flat = await self._call(self._reap_node, node, self._room_ttl_ms)
            for i in range(0, len(flat), 2):  # type: ignore[arg-type]
                departures.append(Departure(flat[i].decode(), _member(flat[i + 1])))  # type: ignore[index]
        return departures

    @translate_errors
    async def claim_name(self, forms: tuple[str, ...], user_id: str) -> str | None:
        owner = await self._call(self._claim_name, self._node_id, user_id, *forms)
        return owner.decode() if owner else None  # type: ignore[attr-defined]

    @translate_errors
    async def release_name(self, forms: tuple[str, ...]) -> None:
        await self._call(self._release_name, self._node_id, *forms)

    @translate_errors
    async def resync(self, held: list[tuple[str, Member]], names: list[HeldName]) -> None:
        fixed = self._policy.fixed
        args: list[object] = [self._node_id, self._room_ttl_ms, self._ttl_ms, len(fixed), *fixed,
                              len(names)]
        for name in names:
            args += [name.form, name.user_id, name.connections]
        for room, member in held:
            args += [room, member.id, _info(member), "1" if room in self._policy.fixed else "0",
                     *self._templates(room, member)]
        await self._call(self._resync, *args)
