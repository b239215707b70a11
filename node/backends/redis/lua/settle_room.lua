
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
