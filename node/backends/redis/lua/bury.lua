
local node = ARGV[2]
if redis.call('GET', settling(node)) ~= ARGV[3] then return 0 end
redis.call('DEL', settling(node))
if redis.call('EXISTS', shared('alive:' .. node)) == 1 then return 0 end
if redis.call('HLEN', node_members(node)) > 0 then return 0 end
redis.call('SREM', NODES, node)
return 1
