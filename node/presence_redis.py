"""Presence in Redis: members tagged with their node, nodes alive while their key lives.

A node refreshes an expiring liveness key; any live node that finds another node's key gone
removes that node's members in one atomic script (only one reaper wins) and reports who left.
Nobody trusts a dead node to clean up after itself.
"""

from __future__ import annotations

import secrets

import msgspec
from redis.asyncio.client import Pipeline

from node.presence import DEFAULT_ROOMS, Departure, Joined, Member, RoomCount
from node.redis_support import RedisKeys, connect, translate_errors

# KEYS: nodes set, the dead node's liveness key, its member index.
# ARGV: the dead node's id, the prefix of room member hashes.
# Returns a flat list room, member info, count for every member removed.
REAP_NODE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return {} end
local held = redis.call('HGETALL', KEYS[3])
local departed = {}
for i = 1, #held, 2 do
  local key = ARGV[2] .. held[i + 1]
  local info = redis.call('HGET', key, held[i])
  if info and cjson.decode(info)[3] == ARGV[1] then
    redis.call('HDEL', key, held[i])
    table.insert(departed, held[i + 1])
    table.insert(departed, info)
    table.insert(departed, redis.call('HLEN', key))
  end
end
redis.call('DEL', KEYS[3])
return departed
"""


# KEYS: the room's members, this node's member index. ARGV: member id, this node's id.
# Removes the member only while this node holds it (a member that resumed on another node
# within the presence grace stays). Returns {removed, count}.
LEAVE = """
redis.call('HDEL', KEYS[2], ARGV[1])
local info = redis.call('HGET', KEYS[1], ARGV[1])
if info and cjson.decode(info)[3] == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return {1, redis.call('HLEN', KEYS[1])}
end
return {0, redis.call('HLEN', KEYS[1])}
"""

UNLOCK_DRAIN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _MemberInfo(msgspec.Struct, array_like=True):
    id: str
    name: str
    node: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_MemberInfo).decode


def _member(info: bytes) -> Member:
    decoded = _decode(info)
    return Member(decoded.id, decoded.name)


class RedisPresence:
    """Room membership across the cluster, in Redis hashes."""

    def __init__(self, url: str, prefix: str, node_id: str, ttl: float) -> None:
        self._redis = connect(url)
        self._keys = RedisKeys(prefix)
        self._node_id = node_id
        self._ttl_ms = int(ttl * 1000)
        self._reap_node = self._redis.register_script(REAP_NODE)
        self._unlock_drain = self._redis.register_script(UNLOCK_DRAIN)
        self._leave = self._redis.register_script(LEAVE)
        self._secret: bytes | None = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self._redis.aclose()

    @translate_errors
    async def join(self, room: str, member: Member) -> Joined:
        async with self._redis.pipeline(transaction=True) as pipe:
            self._hold(pipe, room, member)
            pipe.hvals(self._keys.members(room))
            _, added, *_, infos = await pipe.execute()
        return Joined([_member(info) for info in infos], bool(added))

    @translate_errors
    async def leave(self, room: str, member: Member) -> int | None:
        return await self._leave_held(room, member.id)

    async def _leave_held(self, room: str, member_id: str | bytes) -> int | None:
        keys = [self._keys.members(room), self._keys.node_members(self._node_id)]
        removed, count = await self._leave(keys=keys, args=[member_id, self._node_id])
        return int(count) if removed else None

    @translate_errors
    async def secret(self) -> bytes:
        if self._secret is None:
            key = self._keys.secret
            await self._redis.set(key, secrets.token_hex(32), nx=True)
            self._secret = bytes(await self._redis.get(key))
        return self._secret

    @translate_errors
    async def members(self, room: str) -> list[Member]:
        return [_member(info) for info in await self._redis.hvals(self._keys.members(room))]

    @translate_errors
    async def rooms(self) -> list[RoomCount]:
        names = sorted({*DEFAULT_ROOMS, *(n.decode() for n in await self._redis.smembers(
            self._keys.rooms))})
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hlen(self._keys.members(name))
            counts = await pipe.execute()
        return [RoomCount(name, int(count)) for name, count in zip(names, counts, strict=True)]

    @translate_errors
    async def heartbeat(self) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.node_alive(self._node_id), b"1", px=self._ttl_ms, get=True)
            pipe.sadd(self._keys.nodes, self._node_id)
            previous, _ = await pipe.execute()
        return previous is None

    @translate_errors
    async def reap(self) -> list[Departure]:
        nodes = [n.decode() for n in await self._redis.smembers(self._keys.nodes)]
        others = [n for n in nodes if n != self._node_id]
        departures: list[Departure] = []
        for node in others:
            keys = [self._keys.nodes, self._keys.node_alive(node), self._keys.node_members(node)]
            flat = await self._reap_node(keys=keys, args=[node, self._keys.members("")])
            for i in range(0, len(flat), 3):
                departures.append(Departure(flat[i].decode(), _member(flat[i + 1]),
                                            int(flat[i + 2])))
        return departures

    @translate_errors
    async def resync(self, held: list[tuple[str, Member]]) -> None:
        index = self._keys.node_members(self._node_id)
        recorded = await self._redis.hgetall(index)
        current = {member.id for _, member in held}
        for member_id, room in recorded.items():
            if member_id.decode() not in current:
                await self._leave_held(room.decode(), member_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            for room, member in held:
                self._hold(pipe, room, member)
            pipe.set(self._keys.node_alive(self._node_id), b"1", px=self._ttl_ms)
            await pipe.execute()

    @translate_errors
    async def live_nodes(self) -> list[str]:
        nodes = sorted(n.decode() for n in await self._redis.smembers(self._keys.nodes))
        async with self._redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.exists(self._keys.node_alive(node))
            alive = await pipe.execute()
        return [node for node, exists in zip(nodes, alive, strict=True) if exists]

    @translate_errors
    async def lock_drain(self, ttl: float) -> str | None:
        key = self._keys.drain_lock
        if await self._redis.set(key, self._node_id, nx=True, px=int(ttl * 1000)):
            return None
        holder = await self._redis.get(key)
        return holder.decode() if holder else await self.lock_drain(ttl)

    @translate_errors
    async def unlock_drain(self) -> None:
        await self._unlock_drain(keys=[self._keys.drain_lock], args=[self._node_id])

    def _hold(self, pipe: Pipeline, room: str, member: Member) -> None:
        """Queue the writes that put a member of this node into a room."""
        info = _encode(_MemberInfo(member.id, member.name, self._node_id))
        pipe.sadd(self._keys.rooms, room)
        pipe.hset(self._keys.members(room), member.id, info)
        pipe.hset(self._keys.node_members(self._node_id), member.id, room)
        pipe.sadd(self._keys.nodes, self._node_id)
