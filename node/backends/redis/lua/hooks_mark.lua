-- The room ARGV[1] has webhook events waiting (or about to: producers mark before their
-- script runs): scored in the partition's index KEYS[1] by Redis's clock, in ms.
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 0
