
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
