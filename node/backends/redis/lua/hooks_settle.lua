-- Drop the room's queued events (stream KEYS[1]) that every endpoint (ARGV: their keys) has
-- had, by their cursors (hash KEYS[2]); a drained queue goes with its cursors. Returns the
-- events still kept.
local function parts(id)
  local ms, n = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(n)
end
local lowest_ms, lowest_n = nil, nil
for _, endpoint in ipairs(ARGV) do
  local cursor = redis.call('HGET', KEYS[2], endpoint)
  if not cursor then return redis.call('XLEN', KEYS[1]) end
  local ms, n = parts(cursor)
  if not lowest_ms or ms < lowest_ms or (ms == lowest_ms and n < lowest_n) then
    lowest_ms, lowest_n = ms, n
  end
end
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', lowest_ms, lowest_n + 1))
local kept = redis.call('XLEN', KEYS[1])
if kept == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
return kept
