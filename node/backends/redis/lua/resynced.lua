
local node = ARGV[2]
forget(node, tonumber(ARGV[4]), 5)
redis.call('SET', shared('alive:' .. node), 1, 'PX', ARGV[3])
if redis.call('GET', settling(node)) == node then redis.call('DEL', settling(node)) end
return 1
