
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
  -- Queued for the webhooks (KEYS[2], when they want presence), in the room's order.
  if KEYS[2] then redis.call('XADD', KEYS[2], '*', 'p', payload) end
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
