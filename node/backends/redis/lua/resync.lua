
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
