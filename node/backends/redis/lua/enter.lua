
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
