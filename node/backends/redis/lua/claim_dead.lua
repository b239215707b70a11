
local node = ARGV[2]
if redis.call('EXISTS', shared('alive:' .. node)) == 1 then return 0 end
if redis.call('SISMEMBER', NODES, node) == 0 then return 0 end
if not redis.call('SET', settling(node), ARGV[3], 'NX', 'PX', ARGV[4]) then return 0 end
return 1
