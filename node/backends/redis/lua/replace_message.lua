
-- Put `ARGV[3]` in the place of message `ARGV[1]` of the room's history (KEYS[1]) if that is
-- still `ARGV[2]`, keeping the history's byte count (KEYS[2]) true, and publish `ARGV[4]` to
-- the room (channel ARGV[6], with ARGV[5] the publish command) as an unsequenced event, in
-- the room's order (and queue it for the webhooks in KEYS[3], when given). 1: replaced; 0: no such message (any more); -1: it changed meanwhile.
local seq = tonumber(ARGV[1])
local found = redis.call('ZRANGEBYSCORE', KEYS[1], seq, seq)
if #found == 0 then return 0 end
if found[1] ~= ARGV[2] then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], seq, seq)
redis.call('ZADD', KEYS[1], seq, ARGV[3])
redis.call('INCRBY', KEYS[2], #ARGV[3] - #ARGV[2])
redis.call(ARGV[5], ARGV[6], envelope(ARGV[7], 0, '', ARGV[4], 0, ''))
if KEYS[3] then redis.call('XADD', KEYS[3], '*', 'p', ARGV[4]) end
return 1
