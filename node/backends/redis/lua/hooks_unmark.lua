-- Take the room ARGV[1] out of its partition's index KEYS[1] if it is still marked ARGV[2]
-- and that mark is ARGV[3] ms old: no producer that marked it can still be about to add.
local mark = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not mark or tonumber(mark) ~= tonumber(ARGV[2]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(mark) > now - tonumber(ARGV[3]) then return 0 end
return redis.call('ZREM', KEYS[1], ARGV[1])
