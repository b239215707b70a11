
-- The node's liveness key holds its chat connections (server API `info`).
local lapsed = redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2], 'GET') == false
redis.call('SADD', KEYS[2], ARGV[1])
return lapsed and 1 or 0
